// Package edgetest is test support for the HTTP edge's packages: the whole
// edge as `conversa serve` builds it (NewOps), and Twilio-like signed
// webhooks (InboundForm, Post). Only tests import it.
package edgetest

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twilio/signature"
	"github.com/conversa/conversa/webhook"
)

// BaseURL is the PUBLIC_BASE_URL the tests' edges sign against.
const BaseURL = "https://conversa.example.com"

// InboundForm is a WhatsApp inbound message as Twilio posts it.
func InboundForm(ten testdb.Tenant, from, body string) url.Values {
	return url.Values{
		"MessageSid":  {"SM" + testdb.Unique() + testdb.Unique()},
		"AccountSid":  {ten.AccountSID},
		"From":        {from},
		"To":          {ten.WhatsApp},
		"Body":        {body},
		"NumMedia":    {"0"},
		"ProfileName": {"Ada"},
		"WaId":        {strings.TrimPrefix(from, "whatsapp:+")},
	}
}

// Post signs form with token like Twilio and posts it to path.
func Post(t *testing.T, h http.Handler, path, token string, form url.Values) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", signature.Sign(token, BaseURL+path, form))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// Ops is the full HTTP edge as `conversa serve` builds it: API, River UI and
// metrics, with an admin token of its own.
type Ops struct {
	H     http.Handler
	Admin string
}

// NewOps builds Ops on the test database.
func NewOps(t testing.TB) Ops {
	t.Helper()
	pool := testdb.Pool(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: logger})
	require.NoError(t, err)
	ui, err := webhook.NewRiverUI(t.Context(), rc, logger)
	require.NoError(t, err)
	admin := "adm" + testdb.Unique()
	return Ops{
		Admin: admin,
		H: webhook.NewHandler(webhook.Deps{
			DB:            pool,
			River:         rc,
			Sealer:        testdb.Sealer(t),
			Logger:        logger,
			PublicBaseURL: BaseURL,
			AdminToken:    admin,
			RiverUI:       ui,
			Metrics:       webhook.NewMetrics(prometheus.NewRegistry(), pool),
		}),
	}
}

// Bearer is an Authorization header value for tok.
func Bearer(tok string) string { return "Bearer " + tok }

// Basic is the credentials part of a basic-auth Authorization header.
func Basic(user, pass string) string {
	req := httptest.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// Do sends a request with an Authorization header (none when auth is "");
// body is sent as is when it is a string, else as JSON.
func (o Ops) Do(t testing.TB, method, path, auth string, body any) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		require.NoError(t, err)
		r = bytes.NewReader(buf)
	}
	req := httptest.NewRequest(method, path, r)
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	o.H.ServeHTTP(rec, req)
	return rec
}
