package jobs_test

import (
	"context"
	"testing"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/store"
)

// TestRetentionErasesOldBodiesInBatchesOnce ages some messages past a
// 30-day retention and runs conversa.retention twice with a batch of 2:
// the old messages lose body, media, transcript and the personal parts of
// their trace (the same erasure as a contact's), a summary that folded them
// in goes, the recent messages and another tenant's old ones stay, each
// batch is one audit record, and the second run erases nothing.
func TestRetentionErasesOldBodiesInBatchesOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 10)
	other := testdb.NewTenant(t, tx, 10)
	days := 30
	require.NoError(t, store.SetRetention(ctx, tx, ten.ID, &days))
	ch, err := store.ChannelByAddress(ctx, tx, ten.WhatsApp)
	require.NoError(t, err)
	otherCh, err := store.ChannelByAddress(ctx, tx, other.WhatsApp)
	require.NoError(t, err)

	inbound := func(tenantID string, channelID int64, body string) (int64, int64) {
		res, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: tenantID, ChannelID: channelID, From: "whatsapp:+15550001111",
			MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: body,
			Media: []store.Media{{URL: "https://api.twilio.com/media/ME" + testdb.Unique(), ContentType: "audio/ogg"}}})
		require.NoError(t, err)
		return res.MessageID, res.ConversationID
	}
	var old []int64
	var conv int64
	for i := 0; i < 5; i++ {
		var id int64
		id, conv = inbound(ten.ID, ch.ID, "old words")
		old = append(old, id)
	}
	_, err = store.SetTranscript(ctx, tx, ten.ID, old[0], "old transcript")
	require.NoError(t, err)
	require.NoError(t, store.AddEvent(ctx, tx, ten.ID, old[0], "turn.handoff", map[string]any{"agent": "a", "reason": "old words again"}))
	pendingID, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: conv, Author: store.AuthorBot, Body: "old reply"})
	require.NoError(t, err)
	old = append(old, pendingID)
	otherOld, _ := inbound(other.ID, otherCh.ID, "other tenant's old words")
	_, err = tx.Exec(ctx, `UPDATE messages SET created_at = now() - interval '40 days' WHERE id = ANY($1)`, append(old, otherOld))
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `UPDATE conversations SET summary = 'old summary', summary_through_id = $2 WHERE id = $1`, conv, old[2])
	require.NoError(t, err)
	recent, _ := inbound(ten.ID, ch.ID, "recent words")

	w := jobs.NewRetentionWorker(jobs.Deps{DB: tx, Memory: testMemory(t, testRedis(t))})
	w.SetBatch(2)
	worker := rivertest.NewWorker(t, riverpgxv5.New(nil), &river.Config{}, w)
	audits := func() int {
		var n int
		require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM erasures WHERE tenant_id = $1 AND kind = 'retention'`, ten.ID).Scan(&n))
		return n
	}
	_, err = worker.Work(ctx, t, tx, jobs.RetentionArgs{}, nil)
	require.NoError(t, err)

	for _, id := range old {
		var body, media string
		var transcript *string
		var erased bool
		require.NoError(t, tx.QueryRow(ctx, `SELECT body, media::text, transcript, erased_at IS NOT NULL FROM messages WHERE id = $1`, id).
			Scan(&body, &media, &transcript, &erased))
		require.Empty(t, body)
		require.Equal(t, "[]", media)
		require.Nil(t, transcript)
		require.True(t, erased)
	}
	m, err := store.GetMessage(ctx, tx, ten.ID, pendingID)
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, m.Status, "an old reply never sent is failed, not sent without its words")
	require.Equal(t, store.ReasonRetentionExpired, *m.ErrorReason)
	var reason *string
	require.NoError(t, tx.QueryRow(ctx, `SELECT detail->>'reason' FROM message_events WHERE message_id = $1 AND kind = 'turn.handoff'`, old[0]).Scan(&reason))
	require.Nil(t, reason)
	var summary string
	require.NoError(t, tx.QueryRow(ctx, `SELECT summary FROM conversations WHERE id = $1`, conv).Scan(&summary))
	require.Empty(t, summary)
	for id, want := range map[int64]string{recent: "recent words", otherOld: "other tenant's old words"} {
		var body string
		require.NoError(t, tx.QueryRow(ctx, `SELECT body FROM messages WHERE id = $1`, id).Scan(&body))
		require.Equal(t, want, body)
	}
	require.Equal(t, 3, audits(), "six messages in batches of two")

	_, err = worker.Work(ctx, t, tx, jobs.RetentionArgs{}, nil)
	require.NoError(t, err)
	require.Equal(t, 3, audits(), "a second run erases nothing again")
}
