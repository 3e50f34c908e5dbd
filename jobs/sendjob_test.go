package jobs_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twilio"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// TestEveryReplyKeepsItsSendJob runs turns and sends on a real River client:
// each bot reply is sent by its own conversa.send job, which River keeps
// afterwards with its final state and attempts (completed when Twilio took
// it, cancelled when Twilio refused it for good), as an operator sees it in
// River UI.
func TestEveryReplyKeepsItsSendJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t)
	ten := testdb.NewTenant(t, pool, 5)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	fake := faketwilio.New(faketwilio.Options{NoCallbacks: true})
	u, err := fake.Start()
	require.NoError(t, err)
	t.Cleanup(fake.Close)
	fake.AddAccount(ten.AccountSID, ten.AuthToken)
	tw, err := twilio.New(u, time.Second)
	require.NoError(t, err)

	workers := river.NewWorkers()
	require.NoError(t, jobs.AddWorkers(workers, jobs.Deps{
		DB: pool, Logger: logger, Memory: testMemory(t, testRedis(t)),
		Twilio: tw, Sealer: testdb.Sealer(t), PublicBaseURL: "http://127.0.0.1:1",
	}))
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Logger: logger, Workers: workers,
		Queues: map[string]river.QueueConfig{
			jobargs.QueueReply: {MaxWorkers: 2}, jobargs.QueueSend: {MaxWorkers: 2},
		},
		FetchCooldown: 5 * time.Millisecond, FetchPollInterval: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	require.NoError(t, rc.Start(ctx))
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rc.Stop(stopCtx)
	})

	ch, err := store.ChannelByAddress(ctx, pool, ten.WhatsApp)
	require.NoError(t, err)
	ok, refused := "whatsapp:"+testdb.PhoneNumber(), "whatsapp:"+testdb.PhoneNumber()
	fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultError, Code: 63003, Status: 400, To: refused, Times: 5})
	replies := map[string]int64{}
	for _, from := range []string{ok, refused} {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		in, err := store.InsertInbound(ctx, tx, store.Inbound{
			TenantID: ten.ID, ChannelID: ch.ID, From: from, MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "hi",
		})
		require.NoError(t, err)
		_, err = rc.InsertTx(ctx, tx, jobargs.ReplyArgs{TenantID: ten.ID, ConversationID: in.ConversationID, MessageID: in.MessageID}, nil)
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
		var replyID int64
		require.Eventually(t, func() bool {
			return pool.QueryRow(ctx, `SELECT id FROM messages WHERE reply_to_id = $1`, in.MessageID).Scan(&replyID) == nil
		}, 10*time.Second, 10*time.Millisecond)
		replies[from] = replyID
	}

	want := map[string]struct {
		job     string
		message store.MessageStatus
	}{
		ok:      {"completed", store.StatusQueued},
		refused: {"cancelled", store.StatusFailed},
	}
	for from, id := range replies {
		var state string
		var attempt int
		require.Eventually(t, func() bool {
			err := pool.QueryRow(ctx, `SELECT state, attempt FROM river_job WHERE kind = 'conversa.send'
				AND (args->>'message_id')::bigint = $1`, id).Scan(&state, &attempt)
			return err == nil && state == want[from].job
		}, 10*time.Second, 10*time.Millisecond, "send job of %d ends %s (is %s)", id, want[from].job, state)
		require.Equal(t, 1, attempt)
		m, err := store.GetMessage(ctx, pool, ten.ID, id)
		require.NoError(t, err)
		require.Equal(t, want[from].message, m.Status)
	}
	require.Len(t, fake.Accepted(ok), 1)
	require.Empty(t, fake.Accepted(refused))
}
