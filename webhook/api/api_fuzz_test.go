package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

// FuzzAPIRequests throws arbitrary bodies, ids and queries at every API
// route: whatever comes in, the answer is never a 500 and always the JSON
// error shape when it is not a success.
func FuzzAPIRequests(f *testing.F) {
	o := edgetest.NewOps(f)
	ten := testdb.NewTenant(f, testdb.Pool(f), 0)
	for _, seed := range []struct{ id, query, body string }{
		{ten.ID, "limit=2", `{"name": "x"}`},
		{"1", "cursor=aWQ6MQ", `{"body": "hi"}`},
		{"-1", "status=human", `{"to": "bot"}`},
		{"9223372036854775808", "twilio_sid=SM1", `{"amount": 1e99}`},
		{"abc", "limit=-1", `{"account_sid": "AC1", "auth_token": "t", "numbers": ["+1555"]}`},
		{"", "tenant_id=" + ten.ID, `{"faq": [{"keywords": ["\u0000"], "answer": "\ud800"}]}`},
		{"2", "", `{"to": ["+15551234567", 5], "from": "` + ten.WhatsApp + `", "content_sid": "HX1"}`},
		{"3", "", `{"from": "` + ten.SMS + `", "body": "hi", "to": ["\u0000", "+1555123"], "content_variables": {"1": {"a": 1}}}`},
	} {
		f.Add(seed.id, seed.query, seed.body)
	}
	f.Fuzz(func(t *testing.T, id, query, body string) {
		id = url.PathEscape(id)
		// Keep what a client could send: the query's pairs, re-encoded.
		q, _ := url.ParseQuery(query)
		query = q.Encode()
		for _, r := range []struct{ method, path string }{
			{"POST", "/api/v1/tenants"},
			{"POST", "/api/v1/tenants/" + id + "/accounts"},
			{"POST", "/api/v1/tenants/" + id + "/credits"},
			{"PUT", "/api/v1/tenants/" + id + "/agents/" + id},
			{"GET", "/api/v1/conversations?" + query},
			{"GET", "/api/v1/conversations/" + id + "/messages?" + query},
			{"POST", "/api/v1/conversations/" + id + "/messages"},
			{"POST", "/api/v1/conversations/" + id + "/handoff"},
			{"GET", "/api/v1/messages?" + query},
			{"GET", "/api/v1/messages/" + id + "/trace"},
			{"POST", "/api/v1/tenants/" + ten.ID + "/broadcasts"},
			{"GET", "/api/v1/broadcasts/" + id},
		} {
			// A tenant key, so nothing fuzzed lands outside the fixture tenant.
			rec := o.Do(t, r.method, r.path, edgetest.Bearer(ten.APIKey), body)
			if rec.Code >= 500 {
				t.Fatalf("%s %s %q: %d %s", r.method, r.path, body, rec.Code, rec.Body.String())
			}
			if rec.Code >= 400 {
				var e apiError
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" {
					t.Fatalf("%s %s: not the error shape: %s", r.method, r.path, rec.Body.String())
				}
			}
			if rec.Code == http.StatusCreated && r.path == "/api/v1/tenants" {
				t.Fatal("a tenant key created a tenant")
			}
		}
	})
}
