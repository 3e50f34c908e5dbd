package store_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

// TestMessageStateMachine walks every pair of statuses: the moves the
// table allows are exactly the ones listed here, each stored status is one
// the database takes, and anything else is refused by the database.
func TestMessageStateMachine(t *testing.T) {
	t.Parallel()
	allowed := map[store.MessageStatus][]store.MessageStatus{
		"pending":   {"claimed", "failed"},
		"claimed":   {"pending", "queued", "accepted", "scheduled", "sending", "sent", "delivered", "read", "failed", "undelivered"},
		"queued":    {"sending", "sent", "delivered", "read", "failed", "undelivered"},
		"accepted":  {"sending", "sent", "delivered", "read", "failed", "undelivered"},
		"scheduled": {"sending", "sent", "delivered", "read", "failed", "undelivered"},
		"sending":   {"sent", "delivered", "read", "failed", "undelivered"},
		"sent":      {"delivered", "read", "failed", "undelivered"},
		"delivered": {"read"},
	}
	all := store.AllStatuses()
	require.Len(t, all, 12)
	for _, cur := range all {
		require.True(t, cur.Stored(), cur)
		for _, next := range all {
			require.Equal(t, slices.Contains(allowed[cur], next), cur.CanMove(next), "%s -> %s", cur, next)
		}
	}
	// Twilio's reports: only its statuses move a message, canceled as failed.
	require.True(t, store.Moves("sent", "canceled"))
	require.False(t, store.Moves("delivered", "canceled"))
	require.False(t, store.Moves("sent", "receiving"))
	require.False(t, store.Moves("claimed", "pending"), "not a status Twilio reports")

	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 1)
	ch, err := store.ChannelByAddress(ctx, tx, ten.SMS)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique(), Body: "hi"})
	require.NoError(t, err)
	id, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: store.AuthorBot, Body: "x"})
	require.NoError(t, err)
	// write runs one statement and rolls it back, returning its error.
	write := func(query string, args ...any) error {
		_, err := tx.Exec(ctx, `SAVEPOINT s`)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, query, args...)
		_, rerr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT s`)
		require.NoError(t, rerr)
		return err
	}
	set := func(status store.MessageStatus, sid *string) error {
		return write(`UPDATE messages SET status = $2, twilio_sid = $3 WHERE id = $1`, id, status, sid)
	}
	sid := "SM" + testdb.Unique()
	for _, st := range all {
		if st == store.StatusReceived {
			continue // inbound only
		}
		var withSID *string
		if st != store.StatusClaimed && st != store.StatusPending {
			withSID = &sid
		}
		require.NoError(t, set(st, withSID), st)
	}
	// The database's rule (migration 0018): each break is a check
	// violation that says which part of the rule it broke.
	refused := func(err error, says string) {
		t.Helper()
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "23514", pgErr.Code, pgErr.Message) // check_violation
		require.Contains(t, pgErr.Message, says)
	}
	refused(set("canceled", &sid), "not a stored status") // stored as failed, never as canceled
	refused(set("bogus", nil), "not a stored status")
	refused(set("received", nil), "an outbound message cannot be received")
	refused(set(store.StatusClaimed, &sid), "a claimed message has no Twilio SID")
	require.NoError(t, write(`UPDATE messages SET status = 'received' WHERE id = $1`, in.MessageID))
	refused(write(`UPDATE messages SET status = 'pending' WHERE id = $1`, in.MessageID), "an inbound message cannot be pending")
	refused(write(`UPDATE messages SET author = 'robot' WHERE id = $1`, id), "author robot")
	refused(write(`UPDATE messages SET direction = 'sideways' WHERE id = $1`, id), "direction sideways")
	refused(write(`INSERT INTO messages (tenant_id, conversation_id, direction, author, status) VALUES ($1, $2, 'inbound', 'contact', 'sent')`,
		ten.ID, in.ConversationID), "an inbound message cannot be sent")
	require.NoError(t, write(`INSERT INTO messages (tenant_id, conversation_id, direction, author, status) VALUES ($1, $2, 'outbound', 'human', 'pending')`,
		ten.ID, in.ConversationID))
}

func TestMarkFailedRefundsOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 10)
	ch, err := store.ChannelByAddress(ctx, tx, ten.SMS)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique(), Body: "hi"})
	require.NoError(t, err)
	id, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: "bot", Body: "x", CreditsReserved: 2})
	require.NoError(t, err)

	ok, err := store.MarkFailed(ctx, tx, ten.ID, id, "21211", "invalid_to")
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = store.MarkFailed(ctx, tx, ten.ID, id, "21211", "invalid_to")
	require.NoError(t, err)
	require.False(t, ok, "already failed")
	n, err := store.Refund(ctx, tx, ten.ID, id)
	require.NoError(t, err)
	require.Zero(t, n, "refunded once only")

	got, err := store.GetTenant(ctx, tx, ten.ID)
	require.NoError(t, err)
	require.Equal(t, int64(12), got.Credits)
	var refunds int
	require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM credit_ledger WHERE message_id = $1 AND reason = 'refund'`, id).Scan(&refunds))
	require.Equal(t, 1, refunds)
}

// TestRecordStatusCallbacks: one statement dedupes a batch of callbacks; a
// pair already recorded, or given twice, is new only the first time.
func TestRecordStatusCallbacks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	a, b := "SM"+testdb.Unique()+testdb.Unique(), "SM"+testdb.Unique()+testdb.Unique()
	fresh, err := store.RecordStatusCallback(ctx, tx, a, "sent")
	require.NoError(t, err)
	require.True(t, fresh)
	got, err := store.RecordStatusCallbacks(ctx, tx, []store.StatusCallbackKey{
		{SID: a, Status: "sent"}, {SID: a, Status: "delivered"}, {SID: b, Status: "sent"}, {SID: a, Status: "delivered"},
	})
	require.NoError(t, err)
	require.Equal(t, []bool{false, true, true, false}, got)
}

// TestTraceNumbersTheStory: a story's events are numbered 1, 2, 3, ... in
// the order they were written, across the inbound message and its reply.
func TestTraceNumbersTheStory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 0)
	ch, err := store.ChannelByAddress(ctx, tx, ten.WhatsApp)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: "whatsapp:" + testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique() + testdb.Unique()})
	require.NoError(t, err)
	// Another story's events in between take numbers of the sequence, not
	// places in this story.
	other, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: "whatsapp:" + testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique() + testdb.Unique()})
	require.NoError(t, err)
	require.NoError(t, store.AddEvents(ctx, tx, ten.ID, in.MessageID, store.Event{Kind: "turn.routed"}, store.Event{Kind: "turn.llm"}))
	require.NoError(t, store.AddEvent(ctx, tx, ten.ID, other.MessageID, "turn.routed", nil))
	replyTo := in.MessageID
	reply, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: store.AuthorBot, Body: "hi", ReplyToID: &replyTo, EventKind: "turn.reply"})
	require.NoError(t, err)
	require.NoError(t, store.AddEvent(ctx, tx, ten.ID, reply, "send.attempt", nil))

	events, err := store.MessageEvents(ctx, tx, store.AllTenants(), []int64{in.MessageID, reply})
	require.NoError(t, err)
	var kinds []string
	for i, e := range events {
		require.NotNil(t, e.Seq)
		require.EqualValues(t, i+1, *e.Seq)
		kinds = append(kinds, e.Kind)
	}
	require.Equal(t, []string{"webhook.received", "turn.routed", "turn.llm", "turn.reply", "send.attempt"}, kinds)
}

// TestQuickApplyStatusesMatchApplyStatus: for every stored status and every
// report Twilio sends, the one-statement path writes what the transaction's
// path (RecordStatusCallback, then ApplyStatus) writes on a twin message:
// the same status, the same dedupe, the same trace event. What it must
// leave to that path (a failure, a message without the report's SID) it
// leaves with nothing written.
func TestQuickApplyStatusesMatchApplyStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 1)
	ch, err := store.ChannelByAddress(ctx, tx, ten.SMS)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique(), Body: "hi"})
	require.NoError(t, err)
	// message is an outbound message at status with sid (nil: none).
	message := func(status store.MessageStatus, sid *string) int64 {
		id, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: store.AuthorBot, Body: "x"})
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `UPDATE messages SET status = $2, twilio_sid = $3 WHERE id = $1`, id, status, sid)
		require.NoError(t, err)
		return id
	}
	// written is a message's status, its trace events (kind and detail,
	// without the SID, which differs between twins) and its dedupe rows.
	type writes struct {
		Status store.MessageStatus
		Events []string
		Dedupe int
	}
	written := func(id int64, sid string) writes {
		var w writes
		require.NoError(t, tx.QueryRow(ctx, `SELECT status FROM messages WHERE id = $1`, id).Scan(&w.Status))
		rows, err := tx.Query(ctx, `SELECT kind || ' ' || (detail - 'message_sid')::text FROM message_events WHERE message_id = $1 ORDER BY id`, id)
		require.NoError(t, err)
		w.Events, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM status_callbacks WHERE message_sid = $1`, sid).Scan(&w.Dedupe))
		return w
	}
	reports := []store.MessageStatus{"queued", "accepted", "scheduled", "sending", "sent", "delivered", "read", "failed", "undelivered", "canceled", "receiving"}
	checked := 0
	for _, cur := range store.AllStatuses() {
		if cur == store.StatusReceived {
			continue
		}
		for _, report := range reports {
			name := string(cur) + " <- " + string(report)
			quickSID, slowSID := "SM"+testdb.Unique()+testdb.Unique(), "SM"+testdb.Unique()+testdb.Unique()
			var qs, ss *string
			if cur != store.StatusPending && cur != store.StatusClaimed {
				qs, ss = &quickSID, &slowSID
			}
			quick, slow := message(cur, qs), message(cur, ss)
			before := written(quick, quickSID)
			got, err := store.QuickApplyStatuses(ctx, tx, []store.StatusUpdate{{TenantID: ten.ID, MessageID: quick, MessageSID: quickSID, Status: report}})
			require.NoError(t, err, name)
			if report.Failure() || !report.TwilioReports() || qs == nil {
				require.False(t, got[0].Done, name)
				require.Equal(t, before, written(quick, quickSID), name+": nothing written")
				continue
			}
			fresh, err := store.RecordStatusCallback(ctx, tx, slowSID, string(report))
			require.NoError(t, err)
			require.True(t, fresh)
			applied, err := store.ApplyStatus(ctx, tx, store.StatusUpdate{TenantID: ten.ID, MessageID: slow, MessageSID: slowSID, Status: report})
			require.NoError(t, err, name)
			require.Equal(t, store.QuickStatus{Done: true, Applied: applied}, got[0], name)
			require.Equal(t, written(slow, slowSID), written(quick, quickSID), name)
			require.Equal(t, store.Moves(cur, report), applied, name)

			// The same report again is a duplicate and writes nothing.
			again, err := store.QuickApplyStatuses(ctx, tx, []store.StatusUpdate{{TenantID: ten.ID, MessageID: quick, MessageSID: quickSID, Status: report}})
			require.NoError(t, err, name)
			require.Equal(t, store.QuickStatus{Done: true, Duplicate: true}, again[0], name)
			require.Equal(t, written(slow, slowSID), written(quick, quickSID), name+": after the duplicate")
			checked++
		}
	}
	require.Equal(t, 9*7, checked, "every stored status with a SID, every report that is not a failure")

	// A report whose SID is not the message's is left to ApplyStatus (which
	// records the mismatch), with nothing written.
	sid := "SM" + testdb.Unique() + testdb.Unique()
	id := message(store.StatusSent, &sid)
	before := written(id, sid)
	got, err := store.QuickApplyStatuses(ctx, tx, []store.StatusUpdate{{TenantID: ten.ID, MessageID: id, MessageSID: "SMother" + testdb.Unique(), Status: store.StatusDelivered}})
	require.NoError(t, err)
	require.False(t, got[0].Done)
	require.Equal(t, before, written(id, sid))
}
