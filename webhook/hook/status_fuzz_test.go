package hook_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzStatus posts arbitrary bodies and queries to the status webhook: it
// answers 4xx (or 204), never a server error.
func FuzzStatus(f *testing.F) {
	f.Add("m=1", "MessageSid=SM1&MessageStatus=delivered")
	f.Add("m=-5", "MessageSid=SM1&MessageStatus=sent&ErrorCode=21610")
	f.Add("", "MessageSid=%00&MessageStatus=%ff")
	f.Add("m=99999999999999999999", "%zz")
	f.Fuzz(func(t *testing.T, query, body string) {
		h := edge(t, 0)
		req := httptest.NewRequest(http.MethodPost, "/twilio/status", strings.NewReader(body))
		req.URL.RawQuery = query
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Twilio-Signature", "sig")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for query %q body %q", rec.Code, query, body)
		}
	})
}
