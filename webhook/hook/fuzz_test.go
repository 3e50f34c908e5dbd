package hook_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twilio/signature"
	"github.com/conversa/conversa/webhook"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

// FuzzInbound posts arbitrary bodies, signed and unsigned, to the inbound
// webhook: whatever arrives, the answer is a 2xx/4xx, never a 5xx or a panic.
func FuzzInbound(f *testing.F) {
	f.Add("MessageSid=SM1&From=%2B1&To=%2B2&Body=hi", true)
	f.Add("MessageSid=SM1&From=whatsapp%3A%2B1&To=whatsapp%3A%2B2&Body=%00%FF%FE", true)
	f.Add("Body=%zz", false)
	f.Add("MessageSid=&From=&To=", true)
	f.Add("NumMedia=999999999999&MediaUrl0=x", true)
	f.Add(strings.Repeat("a=b&", 1000), false)

	pool := testdb.Pool(f)
	ten := testdb.NewTenant(f, pool, 0)
	h := webhook.NewHandler(webhook.Deps{
		DB: pool, River: nopInserter{}, Sealer: testdb.Sealer(f),
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		PublicBaseURL: edgetest.BaseURL,
	})
	f.Fuzz(func(t *testing.T, body string, sign bool) {
		form, err := url.ParseQuery(body)
		if sign && err == nil {
			// Point it at the fixture's number so it gets past tenant resolution.
			if form.Get("To") != "" {
				form.Set("To", ten.WhatsApp)
			}
			form.Set("MessageSid", "SMfuzz"+testdb.Unique())
			body = form.Encode()
		}
		req := httptest.NewRequest(http.MethodPost, "/twilio/inbound", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if sign && err == nil {
			req.Header.Set("X-Twilio-Signature", signature.Sign(ten.AuthToken, edgetest.BaseURL+"/twilio/inbound", form))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q", rec.Code, body)
		}
	})
}
