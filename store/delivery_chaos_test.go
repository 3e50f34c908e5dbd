package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

// Twilio's "queued" answer replaces the send's own claim. Found by
// the chaos run: when the server was down for the status callbacks, accepted
// replies stayed claimed (with their SID) for good and looked stuck.
func TestMarkSentReplacesTheSendClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 10)
	ch, err := store.ChannelByAddress(ctx, tx, ten.WhatsApp)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, tx, store.Inbound{
		TenantID: ten.ID, ChannelID: ch.ID, From: "whatsapp:" + testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "hi",
	})
	require.NoError(t, err)
	id, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: "bot", Body: "hello", CreditsReserved: 1})
	require.NoError(t, err)

	claimed, err := store.ClaimSend(ctx, tx, ten.ID, id, 1)
	require.NoError(t, err)
	require.True(t, claimed)
	sid := "SM" + testdb.Unique() + testdb.Unique()
	ok, err := store.MarkSent(ctx, tx, ten.ID, id, sid, store.StatusQueued, "create")
	require.NoError(t, err)
	require.True(t, ok)

	m, err := store.GetMessage(ctx, tx, ten.ID, id)
	require.NoError(t, err)
	require.Equal(t, store.StatusQueued, m.Status)
	require.Equal(t, sid, *m.TwilioSID)

	// Later callbacks still only move forward; a late "queued" changes nothing.
	_, err = store.ApplyStatus(ctx, tx, store.StatusUpdate{TenantID: ten.ID, MessageID: id, MessageSID: sid, Status: store.StatusDelivered})
	require.NoError(t, err)
	_, err = store.ApplyStatus(ctx, tx, store.StatusUpdate{TenantID: ten.ID, MessageID: id, MessageSID: sid, Status: store.StatusQueued})
	require.NoError(t, err)
	m, err = store.GetMessage(ctx, tx, ten.ID, id)
	require.NoError(t, err)
	require.Equal(t, store.StatusDelivered, m.Status)
}

// interleaved is a DBTX that, before the first statement containing match,
// lets another session commit a change: the races a pool caller of MarkSent
// meets.
type interleaved struct {
	store.DBTX
	match  string
	before func()
}

func (d *interleaved) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if d.before != nil && strings.Contains(sql, d.match) {
		f := d.before
		d.before = nil
		f()
	}
	return d.DBTX.Exec(ctx, sql, args...)
}

// A "sent" callback that commits between MarkSent's read and its write is
// not overwritten. Found by the chaos run: the worker's MarkSent (on the
// pool, so its row lock ended with the SELECT) moved a reply from "sent"
// back to "queued".
func TestMarkSentDoesNotOverwriteAConcurrentCallback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t)
	ten, id := claimedReply(t, pool)
	sid := "SM" + testdb.Unique() + testdb.Unique()

	db := &interleaved{DBTX: pool, match: "UPDATE messages", before: func() {
		// The status callbacks win the race: queued (records the SID), then sent.
		for _, st := range []store.MessageStatus{store.StatusQueued, store.StatusSent} {
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			_, err = store.ApplyStatus(ctx, tx, store.StatusUpdate{TenantID: ten.ID, MessageID: id, MessageSID: sid, Status: st})
			require.NoError(t, err)
			require.NoError(t, tx.Commit(ctx))
		}
	}}
	_, err := store.MarkSent(ctx, db, ten.ID, id, sid, store.StatusQueued, "create")
	require.NoError(t, err)

	m, err := store.GetMessage(ctx, pool, ten.ID, id)
	require.NoError(t, err)
	require.Equal(t, store.StatusSent, m.Status)
	require.Equal(t, sid, *m.TwilioSID)
	var accepted int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM message_events WHERE message_id = $1 AND kind = 'send.accepted'`, id).Scan(&accepted))
	require.Equal(t, 1, accepted)
}

// claimedReply makes a reply whose send is claimed, on the pool.
func claimedReply(t *testing.T, pool store.DBTX) (testdb.Tenant, int64) {
	t.Helper()
	ctx := context.Background()
	ten := testdb.NewTenant(t, pool, 10)
	ch, err := store.ChannelByAddress(ctx, pool, ten.WhatsApp)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, pool, store.Inbound{
		TenantID: ten.ID, ChannelID: ch.ID, From: "whatsapp:" + testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "hi",
	})
	require.NoError(t, err)
	id, err := store.InsertOutbound(ctx, pool, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: "bot", Body: "hello", CreditsReserved: 1})
	require.NoError(t, err)
	claimed, err := store.ClaimSend(ctx, pool, ten.ID, id, 1)
	require.NoError(t, err)
	require.True(t, claimed)
	return ten, id
}

// The trace shows "send.accepted" before the callbacks that follow it.
// Found by the chaos run: the worker wrote the event after its UPDATE, on
// the pool, and a slow worker's event landed after "delivered".
func TestMarkSentRecordsAcceptedBeforeLaterCallbacks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t)
	ten, id := claimedReply(t, pool)
	sid := "SM" + testdb.Unique() + testdb.Unique()
	db := &interleaved{DBTX: pool, match: "INSERT INTO message_events", before: func() {
		for _, st := range []store.MessageStatus{store.StatusSent, store.StatusDelivered} {
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			_, err = store.ApplyStatus(ctx, tx, store.StatusUpdate{TenantID: ten.ID, MessageID: id, MessageSID: sid, Status: st})
			require.NoError(t, err)
			require.NoError(t, tx.Commit(ctx))
		}
	}}
	_, err := store.MarkSent(ctx, db, ten.ID, id, sid, store.StatusQueued, "create")
	require.NoError(t, err)
	// In case MarkSent ran no separate insert, the callbacks come now.
	if db.before != nil {
		db.before()
	}

	rows, err := pool.Query(ctx, `SELECT kind FROM message_events WHERE message_id = $1
		AND kind IN ('send.accepted', 'status.callback') ORDER BY id`, id)
	require.NoError(t, err)
	kinds, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"send.accepted", "status.callback", "status.callback"}, kinds)
	m, err := store.GetMessage(ctx, pool, ten.ID, id)
	require.NoError(t, err)
	require.Equal(t, store.StatusDelivered, m.Status)
}
