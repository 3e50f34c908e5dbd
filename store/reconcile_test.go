package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

// TestUnfinishedMatchesFinal walks every status a message can hold through
// the reconciler's SQL predicate (and its index) and IsFinalStatus.
func TestUnfinishedMatchesFinal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 0)
	ch, err := store.ChannelByAddress(ctx, tx, ten.WhatsApp)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: "whatsapp:" + testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique() + testdb.Unique()})
	require.NoError(t, err)
	for _, st := range store.AllStatuses() {
		if st == store.StatusReceived || st == store.StatusClaimed || !st.Stored() {
			continue // inbound; claimed never has a SID (migration 0005); canceled is stored as failed
		}
		before, err := store.UnfinishedReplies(ctx, tx, store.AllTenants())
		require.NoError(t, err)
		id, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: "human", Body: "x"})
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `UPDATE messages SET twilio_sid = $2, status = $3 WHERE id = $1`, id, "SM"+testdb.Unique()+testdb.Unique(), st)
		require.NoError(t, err)
		var accepted *time.Time
		require.NoError(t, tx.QueryRow(ctx, `SELECT accepted_at FROM messages WHERE id = $1`, id).Scan(&accepted))
		require.NotNil(t, accepted, "storing the SID records the acceptance")
		after, err := store.UnfinishedReplies(ctx, tx, store.AllTenants())
		require.NoError(t, err)
		require.Equal(t, !store.IsFinalStatus(string(st)), after == before+1, "status %s", st)
	}
}

func TestFindStuckTurns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 0)
	ch, err := store.ChannelByAddress(ctx, tx, ten.WhatsApp)
	require.NoError(t, err)
	inbound := func(withJob bool) int64 {
		res, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: "whatsapp:" + testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "hi"})
		require.NoError(t, err)
		if withJob {
			_, err = tx.Exec(ctx, `INSERT INTO river_job (kind, args, max_attempts, state, attempt, errors)
				VALUES ('conversa.reply', jsonb_build_object('tenant_id', $1::text, 'message_id', $2::bigint), 10, 'retryable', 3,
				        ARRAY['{"attempt": 3, "error": "llm: timeout"}'::jsonb])`, ten.ID, res.MessageID)
			require.NoError(t, err)
		}
		return res.MessageID
	}
	var mark int64
	require.NoError(t, tx.QueryRow(ctx, `SELECT COALESCE(max(id), 0) FROM messages`).Scan(&mark))
	_, err = tx.Exec(ctx, `UPDATE maintenance_marks SET last_id = $1 WHERE name = 'stuck_turns'`, mark)
	require.NoError(t, err)

	stuck := inbound(true)
	answered := inbound(true)
	var conv int64
	require.NoError(t, tx.QueryRow(ctx, `SELECT conversation_id FROM messages WHERE id = $1`, answered).Scan(&conv))
	_, err = store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: conv, Author: "bot", Body: "x", ReplyToID: &answered})
	require.NoError(t, err)
	explained := inbound(true)
	require.NoError(t, store.AddEvent(ctx, tx, ten.ID, explained, "turn.skipped", map[string]any{"reason": "superseded"}))
	unanswerable := inbound(false) // no turn job: the webhook decided there is none
	young := inbound(true)

	// Everything but the young one arrived over five minutes ago.
	_, err = tx.Exec(ctx, `UPDATE messages SET created_at = now() - interval '6 minutes' WHERE id > $1 AND id < $2`, mark, young)
	require.NoError(t, err)
	found, _, err := store.FindStuckTurns(ctx, tx, store.StuckAfter, 1000)
	require.NoError(t, err)
	var ids []int64
	for _, s := range found {
		ids = append(ids, s.MessageID)
	}
	require.Contains(t, ids, stuck)
	for _, id := range []int64{answered, explained, unanswerable, young} {
		require.NotContains(t, ids, id)
	}
	for _, s := range found {
		if s.MessageID == stuck {
			require.Equal(t, "retryable", *s.JobState)
			require.Equal(t, 3, *s.Attempt)
			require.Equal(t, "llm: timeout", *s.LastError)
		}
	}
	var kind string
	require.NoError(t, tx.QueryRow(ctx, `SELECT kind FROM message_events WHERE message_id = $1 ORDER BY seq DESC LIMIT 1`, stuck).Scan(&kind))
	require.Equal(t, store.EventTurnStuck, kind)

	// Once each: a second run reports none of them again; the young one
	// is checked when its time comes.
	found, _, err = store.FindStuckTurns(ctx, tx, store.StuckAfter, 1000)
	require.NoError(t, err)
	for _, s := range found {
		require.NotEqual(t, stuck, s.MessageID)
	}
	_, err = tx.Exec(ctx, `UPDATE messages SET created_at = now() - interval '6 minutes' WHERE id = $1`, young)
	require.NoError(t, err)
	found, _, err = store.FindStuckTurns(ctx, tx, store.StuckAfter, 1000)
	require.NoError(t, err)
	ids = nil
	for _, s := range found {
		ids = append(ids, s.MessageID)
	}
	require.Contains(t, ids, young)
}
