package api_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

type endpoint struct {
	Name          string   `json:"name"`
	URL           string   `json:"url"`
	Events        []string `json:"events"`
	IncludeBodies bool     `json:"include_bodies"`
}

// TestAPIWebhookEndpoints: PUT creates (201) and replaces (200) an
// endpoint, GET and the list show it, DELETE removes it (204, then 404).
// A URL that is not http(s), has credentials, or is private or loopback
// (TOOLS_ALLOW_PRIVATE is off here), an unknown event type or a bad name is
// 400 naming the field, and writes nothing; another tenant's is 404.
func TestAPIWebhookEndpoints(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 0)
	other := testdb.NewTenant(t, testdb.Pool(t), 0)
	auth := edgetest.Bearer(ten.APIKey)
	path := "/api/v1/tenants/" + ten.ID + "/webhooks/"
	count := func() int {
		var n int
		require.NoError(t, testdb.Pool(t).QueryRow(context.Background(), `SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1`, ten.ID).Scan(&n))
		return n
	}

	for _, bad := range []struct {
		name, field string
		body        any
	}{
		{"crm", "url", map[string]any{"url": "ftp://crm.example.com/hook"}},
		{"crm", "url", map[string]any{"url": "http://127.0.0.1:9000/hook"}},
		{"crm", "url", map[string]any{"url": "http://10.1.2.3/hook"}},
		{"crm", "url", map[string]any{"url": "https://user:pw@crm.example.com/hook"}},
		{"crm", "url", map[string]any{}},
		{"crm", "events", map[string]any{"url": "https://crm.example.com/hook", "events": []string{"message.deleted"}}},
		{"crm", "events", map[string]any{"url": "https://crm.example.com/hook", "events": "message.received"}},
		{"crm", "include_bodies", map[string]any{"url": "https://crm.example.com/hook", "include_bodies": "yes"}},
		{"Has%20Space", "name", map[string]any{"url": "https://crm.example.com/hook"}},
		{"crm", "unknown field", map[string]any{"url": "https://crm.example.com/hook", "secret": "x"}},
	} {
		rec := o.Do(t, http.MethodPut, path+bad.name, auth, bad.body)
		require.Equal(t, http.StatusBadRequest, rec.Code, "%v: %s", bad.body, rec.Body.String())
		require.Contains(t, rec.Body.String(), bad.field, bad.body)
	}
	require.Zero(t, count(), "a refused PUT writes nothing")

	created := call[endpoint](t, o, http.MethodPut, path+"crm", auth,
		map[string]any{"url": "https://crm.example.com/hook", "events": []string{"message.received", "message.received", "message.status"}}, http.StatusCreated)
	require.Equal(t, endpoint{Name: "crm", URL: "https://crm.example.com/hook", Events: []string{"message.received", "message.status"}}, created)
	replaced := call[endpoint](t, o, http.MethodPut, path+"crm", auth,
		map[string]any{"url": "https://crm.example.com/v2", "include_bodies": true}, http.StatusOK)
	require.Equal(t, endpoint{Name: "crm", URL: "https://crm.example.com/v2", IncludeBodies: true}, replaced, "no events: every type")
	require.Equal(t, replaced, call[endpoint](t, o, http.MethodGet, path+"crm", auth, nil, http.StatusOK))
	list := call[struct{ Items []endpoint }](t, o, http.MethodGet, "/api/v1/tenants/"+ten.ID+"/webhooks", auth, nil, http.StatusOK)
	require.Equal(t, []endpoint{replaced}, list.Items)

	require.Equal(t, http.StatusNotFound, o.Do(t, http.MethodGet, "/api/v1/tenants/"+ten.ID+"/webhooks/crm", edgetest.Bearer(other.APIKey), nil).Code)
	require.Equal(t, http.StatusNotFound, o.Do(t, http.MethodDelete, path+"crm", edgetest.Bearer(other.APIKey), nil).Code)
	require.Equal(t, http.StatusNotFound, o.Do(t, http.MethodPut, "/api/v1/tenants/not-a-uuid/webhooks/crm", edgetest.Bearer(o.Admin),
		map[string]any{"url": "https://crm.example.com/hook"}).Code)

	require.Equal(t, http.StatusNoContent, o.Do(t, http.MethodDelete, path+"crm", auth, nil).Code)
	require.Equal(t, http.StatusNotFound, o.Do(t, http.MethodDelete, path+"crm", auth, nil).Code)
	require.Equal(t, http.StatusNotFound, o.Do(t, http.MethodGet, path+"crm", auth, nil).Code)
	require.Zero(t, count())
}

// TestAPIListEvents: GET /events pages through a tenant's relayed events
// in commit order with after and limit; bad parameters are 400 naming
// them; another tenant sees none of them.
func TestAPIListEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	o := edgetest.NewOps(t)
	pool := testdb.Pool(t)
	ten := testdb.NewTenant(t, pool, 0)
	other := testdb.NewTenant(t, pool, 0)
	_, _, err := store.PutEndpoint(ctx, pool, store.Endpoint{TenantID: ten.ID, Name: "crm", URL: "https://crm.example.com/hook"})
	require.NoError(t, err)
	var ids []int64
	for i := range 3 {
		require.NoError(t, store.RecordEvent(ctx, pool, store.NewEvent{TenantID: ten.ID, Type: store.EventBroadcastFinished,
			Data: map[string]any{"broadcast_id": i}}))
	}
	relayAll(t, pool)
	path := "/api/v1/tenants/" + ten.ID + "/events"
	type page struct {
		Items []struct {
			ID       int64          `json:"id"`
			Type     string         `json:"type"`
			TenantID string         `json:"tenant_id"`
			Data     map[string]any `json:"data"`
		} `json:"items"`
		NextAfter int64 `json:"next_after"`
		HasMore   bool  `json:"has_more"`
	}
	auth := edgetest.Bearer(ten.APIKey)
	first := call[page](t, o, http.MethodGet, path+"?limit=2", auth, nil, http.StatusOK)
	require.Len(t, first.Items, 2)
	require.True(t, first.HasMore)
	for _, e := range first.Items {
		ids = append(ids, e.ID)
		require.Equal(t, store.EventBroadcastFinished, e.Type)
		require.Equal(t, ten.ID, e.TenantID)
	}
	require.EqualValues(t, 0, first.Items[0].Data["broadcast_id"])
	second := call[page](t, o, http.MethodGet, path+"?limit=2&after="+id(first.NextAfter), auth, nil, http.StatusOK)
	require.Len(t, second.Items, 1)
	require.False(t, second.HasMore)
	require.EqualValues(t, 2, second.Items[0].Data["broadcast_id"])
	require.Less(t, ids[1], second.Items[0].ID)
	empty := call[page](t, o, http.MethodGet, path+"?after="+id(second.NextAfter), auth, nil, http.StatusOK)
	require.Empty(t, empty.Items)
	require.Equal(t, second.NextAfter, empty.NextAfter, "an empty page keeps the caller's place")

	for q, field := range map[string]string{"?after=x": "after", "?after=-1": "after", "?limit=0": "limit",
		"?include_bodies=maybe": "include_bodies", "?after=999999999": "after"} {
		rec := o.Do(t, http.MethodGet, path+q, auth, nil)
		require.Equal(t, http.StatusBadRequest, rec.Code, "%s: %s", q, rec.Body.String())
		require.Contains(t, rec.Body.String(), field, q)
	}
	require.Equal(t, http.StatusNotFound, o.Do(t, http.MethodGet, path, edgetest.Bearer(other.APIKey), nil).Code)
	theirs := call[page](t, o, http.MethodGet, "/api/v1/tenants/"+other.ID+"/events", edgetest.Bearer(other.APIKey), nil, http.StatusOK)
	require.Empty(t, theirs.Items)
}

// relayAll relays every waiting event, as jobs.EventRelay does, without
// inserting the delivery jobs (this test has no workers).
func relayAll(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	for {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		_, n, ok, err := store.RelayEvents(ctx, tx, 500)
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
		if ok && n == 0 {
			return
		}
	}
}
