package jobs_test

import (
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
	"github.com/conversa/conversa/internal/twilio"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// traceEnv is a turn environment with a fake Twilio and the send worker
// that works each reply's conversa.send job.
type traceEnv struct {
	*turnEnv
	fake *faketwilio.Fake
	send *rivertest.Worker[jobargs.SendArgs, pgx.Tx]
}

func newTraceEnv(t *testing.T) *traceEnv {
	t.Helper()
	fake := faketwilio.New(faketwilio.Options{NoCallbacks: true})
	u, err := fake.Start()
	require.NoError(t, err)
	t.Cleanup(fake.Close)
	tw, err := twilio.New(u, 300*time.Millisecond)
	require.NoError(t, err)
	var deps jobs.Deps
	e := newTurnEnv(t, 5, func(d *jobs.Deps) {
		d.Twilio, d.Sealer, d.PublicBaseURL = tw, testdb.Sealer(t), "http://127.0.0.1:1"
		d.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		deps = *d
	})
	fake.AddAccount(e.ten.AccountSID, e.ten.AuthToken)
	return &traceEnv{turnEnv: e, fake: fake,
		send: rivertest.NewWorker(t, riverpgxv5.New(nil), &river.Config{}, jobs.NewSendWorker(deps))}
}

// reply is the turn's reply message.
func (e *traceEnv) reply(in store.InboundResult) store.Message {
	e.t.Helper()
	var id int64
	require.NoError(e.t, e.tx.QueryRow(e.ctx, `SELECT id FROM messages WHERE reply_to_id = $1`, in.MessageID).Scan(&id))
	m, err := store.GetMessage(e.ctx, e.tx, e.ten.ID, id)
	require.NoError(e.t, err)
	return m
}

// sendReply works the reply's conversa.send job once.
func (e *traceEnv) sendReply(in store.InboundResult) *rivertest.WorkResult {
	e.t.Helper()
	res, err := e.send.Work(e.ctx, e.t, e.tx, jobargs.SendArgs{TenantID: e.ten.ID, MessageID: e.reply(in).ID}, nil)
	return checkWork(e.t, res, err)
}

// timeline is the trace of an inbound message and its reply as the trace
// API orders it, without the bookkeeping events (credits, memory).
func (e *traceEnv) timeline(in store.InboundResult) []string {
	e.t.Helper()
	reply := e.reply(in)
	events, err := store.MessageEvents(e.ctx, e.tx, store.AllTenants(), []int64{in.MessageID, reply.ID})
	require.NoError(e.t, err)
	var kinds []string
	var last int64
	for _, ev := range events {
		require.NotNil(e.t, ev.Seq)
		require.Greater(e.t, *ev.Seq, last, "one count for the story, strictly increasing")
		last = *ev.Seq
		switch ev.Kind {
		case "turn.memory", "turn.replied", "credits.refunded":
			continue
		}
		kinds = append(kinds, ev.Kind)
	}
	return kinds
}

// callbacks applies Twilio's status callbacks to the reply.
func (e *traceEnv) callbacks(in store.InboundResult, statuses ...string) {
	e.t.Helper()
	m := e.reply(in)
	for _, st := range statuses {
		_, err := store.ApplyStatus(e.ctx, e.tx, store.StatusUpdate{TenantID: e.ten.ID, MessageID: m.ID, MessageSID: *m.TwilioSID, Status: store.MessageStatus(st)})
		require.NoError(e.t, err)
	}
}

func TestTraceIsInTheOrderThingsHappened(t *testing.T) {
	t.Parallel()
	e := newTraceEnv(t)
	in := e.inbound("what are your opening hours?")
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	e.sendReply(in)
	e.callbacks(in, "sent", "delivered")
	require.Equal(t, []string{
		"webhook.received", "turn.routed", "turn.llm", "turn.reply", "send.attempt", "send.accepted",
		"status.callback", "status.callback",
	}, e.timeline(in))
}

func TestTraceOfARetriedSendIsInOrder(t *testing.T) {
	t.Parallel()
	e := newTraceEnv(t)
	e.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultRateLimit})
	in := e.inbound("hi")
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	e.sendReply(in) // 429: retried
	e.sendReply(in)
	e.callbacks(in, "sent", "delivered")
	require.Equal(t, []string{
		"webhook.received", "turn.routed", "turn.llm", "turn.reply", "send.attempt", "send.retry",
		"send.attempt", "send.accepted", "status.callback", "status.callback",
	}, e.timeline(in))
}
