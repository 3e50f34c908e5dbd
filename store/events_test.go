package store_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

type loggedEvent struct {
	Type           string
	MessageID      *int64
	ConversationID *int64
	Data           map[string]any
}

// tenantEvents is the tenant's event log, oldest first.
func tenantEvents(t *testing.T, db store.DBTX, tenantID string) []loggedEvent {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT type, message_id, conversation_id, data FROM events WHERE tenant_id = $1 ORDER BY id`, tenantID)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (loggedEvent, error) {
		var e loggedEvent
		err := r.Scan(&e.Type, &e.MessageID, &e.ConversationID, &e.Data)
		return e, err
	})
	require.NoError(t, err)
	return out
}

// TestEventsAreWrittenWithTheirChange: the database writes an event in
// the statement of the change it reports, and only then: not for a tenant
// without an endpoint, not for a redelivered MessageSid or a rolled-back
// insert, not for our own states (pending, claimed) or a status that does
// not move. Each holds ids and codes, never the number or the body.
func TestEventsAreWrittenWithTheirChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 10)
	ch, err := store.ChannelByAddress(ctx, tx, ten.WhatsApp)
	require.NoError(t, err)
	from := "whatsapp:" + testdb.PhoneNumber()
	inbound := func(sid, body string) store.InboundResult {
		res, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: from, ProfileName: "Ana Maria", MessageSID: sid, Body: body})
		require.NoError(t, err)
		return res
	}

	inbound("SM"+testdb.Unique(), "before any endpoint")
	require.Empty(t, tenantEvents(t, tx, ten.ID), "a tenant without an endpoint writes no events")

	_, _, err = store.PutEndpoint(ctx, tx, store.Endpoint{TenantID: ten.ID, Name: "crm", URL: "https://crm.example.com/hook"})
	require.NoError(t, err)
	sid := "SM" + testdb.Unique()
	in := inbound(sid, "my card number is 4111")
	inbound(sid, "my card number is 4111") // Twilio redelivers
	_, err = tx.Exec(ctx, `SAVEPOINT s`)
	require.NoError(t, err)
	inbound("SM"+testdb.Unique(), "rolled back")
	_, err = tx.Exec(ctx, `ROLLBACK TO SAVEPOINT s`)
	require.NoError(t, err)
	evs := tenantEvents(t, tx, ten.ID)
	require.Len(t, evs, 1)
	require.Equal(t, store.EventMessageReceived, evs[0].Type)
	require.Equal(t, in.MessageID, *evs[0].MessageID)
	require.Equal(t, in.ConversationID, *evs[0].ConversationID)

	reply, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: store.AuthorBot,
		Body: "your card ends in 4111", ReplyToID: &in.MessageID})
	require.NoError(t, err)
	_, err = store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: store.AuthorHuman, Body: "a person writes"})
	require.NoError(t, err)
	ok, err := store.ClaimSend(ctx, tx, ten.ID, reply, 1)
	require.NoError(t, err)
	require.True(t, ok)
	replySID := "SM" + testdb.Unique()
	_, err = store.MarkSent(ctx, tx, ten.ID, reply, replySID, store.StatusQueued, "create")
	require.NoError(t, err)
	for _, s := range []store.MessageStatus{store.StatusDelivered, store.StatusSent, store.StatusDelivered, store.StatusRead} {
		_, err = store.ApplyStatus(ctx, tx, store.StatusUpdate{TenantID: ten.ID, MessageID: reply, MessageSID: replySID, Status: s})
		require.NoError(t, err)
	}
	_, err = store.Handoff(ctx, tx, store.TenantScope(ten.ID), in.ConversationID, store.ConversationHuman)
	require.NoError(t, err)
	_, err = store.Handoff(ctx, tx, store.TenantScope(ten.ID), in.ConversationID, store.ConversationHuman)
	require.NoError(t, err)
	_, err = store.SetConversationStatus(ctx, tx, ten.ID, in.ConversationID, store.ConversationBot, store.HandoffByOperator)
	require.NoError(t, err)
	require.NoError(t, store.RecordEvent(ctx, tx, store.NewEvent{TenantID: ten.ID, Type: store.EventTurnGaveUp,
		MessageID: in.MessageID, ConversationID: in.ConversationID, Data: map[string]any{"reason": "outage"}}))
	require.Error(t, store.RecordEvent(ctx, tx, store.NewEvent{TenantID: ten.ID, Type: "message.deleted"}))

	type brief struct {
		Type string
		Key  any
	}
	var got []brief
	for _, e := range tenantEvents(t, tx, ten.ID) {
		key := e.Data["status"]
		switch e.Type {
		case store.EventConversationHandoff:
			key = e.Data["to"].(string) + "/" + e.Data["reason"].(string)
		case store.EventTurnGaveUp:
			key = e.Data["reason"]
		}
		got = append(got, brief{e.Type, key})
		raw, err := json.Marshal(e.Data)
		require.NoError(t, err)
		for _, personal := range []string{strings.TrimPrefix(from, "whatsapp:"), "4111", "Ana"} {
			require.NotContains(t, string(raw), personal, "events hold ids and codes only")
		}
	}
	require.Equal(t, []brief{
		{store.EventMessageReceived, nil},
		{store.EventMessageReplied, nil}, // the person's message is not a reply event
		{store.EventMessageStatus, "queued"},
		{store.EventMessageStatus, "delivered"}, // the late "sent" and the repeated "delivered" move nothing
		{store.EventMessageStatus, "read"},
		{store.EventConversationHandoff, "human/operator"}, // handing over twice is one change
		{store.EventConversationHandoff, "bot/operator"},
		{store.EventTurnGaveUp, "outage"},
	}, got)
}

// TestEventOrderFollowsCommits: an event that commits after a later one
// was relayed gets a later place (seq), so a receiver paging GET /events
// with after= never skips it, though its id is the smaller.
func TestEventOrderFollowsCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.NewPool(t)
	ten := testdb.NewTenant(t, pool, 0)
	_, _, err := store.PutEndpoint(ctx, pool, store.Endpoint{TenantID: ten.ID, Name: "crm", URL: "https://crm.example.com/hook"})
	require.NoError(t, err)
	_, _, err = store.PutEndpoint(ctx, pool, store.Endpoint{TenantID: ten.ID, Name: "alerts", URL: "https://alerts.example.com/hook",
		Events: []string{store.EventConversationHandoff}})
	require.NoError(t, err)
	record := func(db store.DBTX, n int) {
		require.NoError(t, store.RecordEvent(ctx, db, store.NewEvent{TenantID: ten.ID, Type: store.EventBroadcastFinished, Data: map[string]any{"n": n}}))
	}
	relay := func() []store.EventDelivery {
		t.Helper()
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck
		var ours []store.EventDelivery
		for {
			d, n, ok, err := store.RelayEvents(ctx, tx, 500)
			require.NoError(t, err)
			require.True(t, ok, "no other relay holds the lock")
			for _, x := range d {
				if x.TenantID == ten.ID {
					ours = append(ours, x)
				}
			}
			if n == 0 {
				break
			}
		}
		require.NoError(t, tx.Commit(ctx))
		return ours
	}
	listed := func(after int64) []int {
		list, err := store.ListEvents(ctx, pool, ten.ID, after, 100, false)
		require.NoError(t, err)
		var ns []int
		for _, e := range list {
			ns = append(ns, int(e.Data["n"].(float64)))
		}
		return ns
	}

	slow, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer slow.Rollback(ctx) //nolint:errcheck
	record(slow, 1)          // the smaller id, committed last
	record(pool, 2)
	d := relay()
	require.Len(t, d, 1, "one delivery: only crm wants broadcast.finished")
	require.Equal(t, []int{2}, listed(0), "the uncommitted event is not listed yet")
	first, err := store.ListEvents(ctx, pool, ten.ID, 0, 100, false)
	require.NoError(t, err)
	require.NoError(t, slow.Commit(ctx))
	require.Len(t, relay(), 1)
	require.Equal(t, []int{1}, listed(first[0].ID), "after the last event seen, the late one comes next")
	require.Equal(t, []int{2, 1}, listed(0))
	require.Empty(t, relay(), "relayed once")
}
