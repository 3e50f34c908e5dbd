package webhook_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twilio/signature"
	"github.com/conversa/conversa/webhook"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

func TestWebhookBrakesAnIPThatKeepsFailingSignatures(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	require.NoError(t, err)
	frozen := time.Now()
	h := webhook.NewHandler(webhook.Deps{
		DB: pool, River: rc, Sealer: testdb.Sealer(t),
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		PublicBaseURL: edgetest.BaseURL,
		Now:           func() time.Time { return frozen }, // no refill during the test
	})
	ten := testdb.NewTenant(t, pool, 0)
	from := "whatsapp:" + testdb.PhoneNumber()

	postFrom := func(ip string, sign bool) int {
		form := edgetest.InboundForm(ten, from, "hi")
		req := httptest.NewRequest(http.MethodPost, "/twilio/inbound", strings.NewReader(form.Encode()))
		req.RemoteAddr = ip + ":5555"
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		sig := "forged"
		if sign {
			sig = signature.Sign(ten.AuthToken, edgetest.BaseURL+"/twilio/inbound", form)
		}
		req.Header.Set("X-Twilio-Signature", sig)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	// Genuine traffic never spends the bucket.
	for i := 0; i < 250; i++ {
		require.Equal(t, http.StatusOK, postFrom("10.0.0.1", true))
	}
	codes := map[int]int{}
	for i := 0; i < 250; i++ {
		codes[postFrom("10.0.0.2", false)]++
	}
	require.Equal(t, 200, codes[http.StatusForbidden], "the burst is spent on rejections")
	require.Equal(t, 50, codes[http.StatusTooManyRequests])
	require.Equal(t, http.StatusOK, postFrom("10.0.0.1", true), "other addresses are unaffected")
}
