package jobs_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/store"
)

// inlineEnv is a turn environment whose reply worker sends inline through
// a fake Twilio, with the send worker that works the backup jobs.
type inlineEnv struct {
	*turnEnv
	fake *faketwilio.Fake
	send *rivertest.Worker[jobs.SendArgs, pgx.Tx]
}

func newInlineEnv(t *testing.T) *inlineEnv {
	t.Helper()
	fake := faketwilio.New(faketwilio.Options{NoCallbacks: true})
	u, err := fake.Start()
	require.NoError(t, err)
	t.Cleanup(fake.Close)
	tw, err := jobs.NewTwilio(u, 300*time.Millisecond)
	require.NoError(t, err)
	var deps jobs.Deps
	e := newTurnEnv(t, 5, func(d *jobs.Deps) {
		d.Twilio, d.Sealer, d.PublicBaseURL = tw, testdb.Sealer(t), "http://127.0.0.1:1"
		d.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		deps = *d
	})
	fake.AddAccount(e.ten.AccountSID, e.ten.AuthToken)
	return &inlineEnv{turnEnv: e, fake: fake,
		send: rivertest.NewWorker(t, riverpgxv5.New(nil), &river.Config{}, jobs.NewSendWorker(deps))}
}

// reply is the turn's reply message.
func (e *inlineEnv) reply(in store.InboundResult) store.Message {
	e.t.Helper()
	var id int64
	require.NoError(e.t, e.tx.QueryRow(e.ctx, `SELECT id FROM messages WHERE reply_to_id = $1`, in.MessageID).Scan(&id))
	m, err := store.GetMessage(e.ctx, e.tx, e.ten.ID, id)
	require.NoError(e.t, err)
	return m
}

// backup is the reply's conversa.send job, if it still exists.
func (e *inlineEnv) backup(replyID int64) (state string, dueIn time.Duration, ok bool) {
	e.t.Helper()
	var secs float64
	err := e.tx.QueryRow(e.ctx, `SELECT state, extract(epoch FROM scheduled_at - now()) FROM river_job
		WHERE kind = 'conversa.send' AND (args->>'message_id')::bigint = $1`, replyID).Scan(&state, &secs)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, false
	}
	require.NoError(e.t, err)
	return state, time.Duration(secs * float64(time.Second)), true
}

// workBackup works the reply's backup send job now, as River would once it is due.
func (e *inlineEnv) workBackup(replyID int64) {
	e.t.Helper()
	res, err := e.send.Work(e.ctx, e.t, e.tx, jobs.SendArgs{TenantID: e.ten.ID, MessageID: replyID}, nil)
	checkWork(e.t, res, err)
}

func TestReplyIsSentInlineAndItsBackupJobRemoved(t *testing.T) {
	t.Parallel()
	e := newInlineEnv(t)
	in := e.inbound("what are your opening hours?")
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)

	m := e.reply(in)
	got := e.fake.Accepted("")
	require.Len(t, got, 1, "sent by the reply worker, no send job needed")
	require.Equal(t, m.Body, got[0].Body)
	require.NotNil(t, m.TwilioSID)
	require.Equal(t, got[0].SID, *m.TwilioSID)
	require.Equal(t, "queued", m.Status, "as Twilio answered the create call")
	ev := e.events(m.ID)
	require.Contains(t, ev, "send.attempt")
	require.Equal(t, "inline", ev["send.accepted"]["how"])
	_, _, ok := e.backup(m.ID)
	require.False(t, ok, "the backup send job is deleted once Twilio took the reply")

	// Had the backup survived (a delete lost in a crash), it sends nothing.
	e.workBackup(m.ID)
	require.Len(t, e.fake.Accepted(""), 1)
}

func TestInlineSendWithUnknownOutcomeLeavesItToTheBackupJob(t *testing.T) {
	t.Parallel()
	e := newInlineEnv(t)
	// Twilio creates the message, but the answer never arrives.
	e.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultAcceptThenHang})
	in := e.inbound("hi")
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)

	m := e.reply(in)
	require.Equal(t, "sending", m.Status, "claimed, outcome unknown")
	require.Nil(t, m.TwilioSID)
	require.Contains(t, e.events(m.ID), "send.ambiguous")
	state, dueIn, ok := e.backup(m.ID)
	require.True(t, ok)
	require.Contains(t, []string{"scheduled", "available"}, state)
	require.Greater(t, dueIn, time.Second, "not due while the inline attempt could still be running")

	// When due, the backup looks the message up instead of sending it again.
	e.workBackup(m.ID)
	require.Len(t, e.fake.Accepted(""), 1, "no second copy")
	m = e.reply(in)
	require.NotNil(t, m.TwilioSID)
	require.Equal(t, e.fake.Accepted("")[0].SID, *m.TwilioSID)
}

func TestInlineSendRejectedForNowIsRetriedByTheBackupJob(t *testing.T) {
	t.Parallel()
	e := newInlineEnv(t)
	e.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultRateLimit})
	in := e.inbound("hi")
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)

	m := e.reply(in)
	require.Equal(t, "pending", m.Status, "Twilio did not take it: unclaimed")
	require.Contains(t, e.events(m.ID), "send.retry")
	require.Empty(t, e.fake.Accepted(""))
	_, _, ok := e.backup(m.ID)
	require.True(t, ok)

	e.workBackup(m.ID)
	got := e.fake.Accepted("")
	require.Len(t, got, 1)
	require.Equal(t, got[0].SID, *e.reply(in).TwilioSID)
}

func TestInlineSendPermanentErrorFailsAndRefunds(t *testing.T) {
	t.Parallel()
	e := newInlineEnv(t)
	e.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultError, Code: 21211, Status: 400})
	in := e.inbound("hi")
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)

	m := e.reply(in)
	require.Equal(t, "failed", m.Status)
	require.NotNil(t, m.ErrorCode)
	require.Equal(t, "21211", *m.ErrorCode)
	require.EqualValues(t, 5, e.credits(), "the reply's credit is refunded")
	state, _, ok := e.backup(m.ID)
	require.True(t, ok)
	require.Equal(t, "cancelled", state, "the send job ends cancelled, never retried")
}

func TestTurnWithoutAPacingSlotLeavesTheSendToItsJob(t *testing.T) {
	t.Parallel()
	e := newInlineEnv(t)
	// Someone else just took this SMS number's one slot a second.
	_, err := e.tx.Exec(context.Background(), `UPDATE channels SET rate_per_second = 0.001 WHERE id = $1`, e.ch.ID)
	require.NoError(t, err)
	first := e.inbound("hi")
	require.Equal(t, river.EventKindJobCompleted, e.work(first).EventKind)
	require.Len(t, e.fake.Accepted(""), 1, "the first reply takes the slot inline")

	e.from = "whatsapp:" + testdb.PhoneNumber()
	second := e.inbound("hello")
	require.Equal(t, river.EventKindJobCompleted, e.work(second).EventKind)
	m := e.reply(second)
	require.Equal(t, "pending", m.Status, "no slot: not claimed")
	state, dueIn, ok := e.backup(m.ID)
	require.True(t, ok)
	require.Equal(t, "available", state)
	require.Less(t, dueIn, time.Second, "the send job is due at once and paces it")
	require.Len(t, e.fake.Accepted(""), 1)
}
