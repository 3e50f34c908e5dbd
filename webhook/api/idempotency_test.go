package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

// withKey sends a JSON body with an Idempotency-Key.
func withKey(t testing.TB, o edgetest.Ops, method, path, auth, key, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", auth)
	req.Header.Set("Idempotency-Key", key)
	rec := httptest.NewRecorder()
	o.H.ServeHTTP(rec, req)
	return rec
}

func (w world) outboundCount(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, testdb.Pool(t).QueryRow(context.Background(),
		`SELECT count(*) FROM messages WHERE conversation_id = $1 AND direction = 'outbound'`, w.conv.ID).Scan(&n))
	return n
}

func TestIdempotencyKeyReplaysAndCreatesNothing(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	w := newWorld(t, o)
	key := edgetest.Bearer(w.ten.APIKey)
	path := "/api/v1/conversations/" + id(w.conv.ID) + "/messages"

	first := withKey(t, o, "POST", path, key, "k-"+testdb.Unique(), `{"body": "A person here."}`)
	require.Equal(t, http.StatusAccepted, first.Code, first.Body.String())
	k := "retry-" + testdb.Unique()
	a := withKey(t, o, "POST", path, key, k, `{"body": "Your refund is on its way."}`)
	require.Equal(t, http.StatusAccepted, a.Code, a.Body.String())
	b := withKey(t, o, "POST", path, key, k, `{"body": "Your refund is on its way."}`)
	require.Equal(t, http.StatusAccepted, b.Code)
	require.JSONEq(t, a.Body.String(), b.Body.String(), "the same answer")
	require.Equal(t, "true", b.Header().Get("Idempotent-Replayed"))
	require.Equal(t, 2, w.outboundCount(t), "the repeat created nothing")

	// The same key with another body: 409, nothing created.
	c := withKey(t, o, "POST", path, key, k, `{"body": "Something else."}`)
	require.Equal(t, http.StatusConflict, c.Code)
	require.Contains(t, c.Body.String(), "idempotency_key_reused")
	require.Equal(t, 2, w.outboundCount(t))

	// Keys are per caller: another tenant's same key is its own request.
	other := newWorld(t, o)
	d := withKey(t, o, "POST", "/api/v1/conversations/"+id(other.conv.ID)+"/messages", edgetest.Bearer(other.ten.APIKey), k, `{"body": "Hello."}`)
	require.Equal(t, http.StatusAccepted, d.Code, d.Body.String())

	// A refused request is answered the same way again, and created nothing.
	bad := withKey(t, o, "POST", path, key, "bad-"+testdb.Unique(), `{"body": ""}`)
	require.Equal(t, http.StatusBadRequest, bad.Code)
	require.Equal(t, 2, w.outboundCount(t))

	// A malformed key is a 400 and creates nothing.
	e := withKey(t, o, "POST", path, key, strings.Repeat("x", 300), `{"body": "Hi."}`)
	require.Equal(t, http.StatusBadRequest, e.Code)
	require.Equal(t, 2, w.outboundCount(t))

	// Credits: a retried top-up adds once.
	ck := "topup-" + testdb.Unique()
	credits := "/api/v1/tenants/" + w.ten.ID + "/credits"
	r1 := withKey(t, o, "POST", credits, edgetest.Bearer(o.Admin), ck, `{"amount": 7}`)
	r2 := withKey(t, o, "POST", credits, edgetest.Bearer(o.Admin), ck, `{"amount": 7}`)
	require.Equal(t, http.StatusOK, r1.Code, r1.Body.String())
	require.JSONEq(t, r1.Body.String(), r2.Body.String())
	require.Contains(t, r1.Body.String(), `"balance":12`)
}

func TestIdempotencyKeyRacingRequestsCreateOne(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	w := newWorld(t, o)
	key := edgetest.Bearer(w.ten.APIKey)
	path := "/api/v1/conversations/" + id(w.conv.ID) + "/messages"
	k := "race-" + testdb.Unique()

	const n = 8
	answers := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = withKey(t, o, "POST", path, key, k, `{"body": "On our way."}`)
		}()
	}
	close(start)
	wg.Wait()
	for _, a := range answers {
		require.Equal(t, http.StatusAccepted, a.Code, a.Body.String())
		require.JSONEq(t, answers[0].Body.String(), a.Body.String())
	}
	require.Equal(t, 1, w.outboundCount(t), "%d racing requests with one key created one message", n)
	var jobs int
	require.NoError(t, testdb.Pool(t).QueryRow(context.Background(),
		`SELECT count(*) FROM river_job WHERE kind = 'conversa.send' AND args->>'tenant_id' = $1`, w.ten.ID).Scan(&jobs))
	require.Equal(t, 1, jobs)
}
