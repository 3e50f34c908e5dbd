package jobs_test

import (
	"testing"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/store"
)

// timeline is the trace of an inbound message and its reply as the trace
// API orders it, without the bookkeeping events (credits, memory).
func (e *inlineEnv) timeline(in store.InboundResult) []string {
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
func (e *inlineEnv) callbacks(in store.InboundResult, statuses ...string) {
	e.t.Helper()
	m := e.reply(in)
	for _, st := range statuses {
		_, err := store.ApplyStatus(e.ctx, e.tx, store.StatusUpdate{TenantID: e.ten.ID, MessageID: m.ID, MessageSID: *m.TwilioSID, Status: st})
		require.NoError(e.t, err)
	}
}

func TestTraceIsInTheOrderThingsHappened(t *testing.T) {
	t.Parallel()
	e := newInlineEnv(t)
	in := e.inbound("what are your opening hours?")
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	e.callbacks(in, "sent", "delivered")
	require.Equal(t, []string{
		"webhook.received", "turn.routed", "turn.llm", "turn.reply", "send.attempt", "send.accepted",
		"status.callback", "status.callback",
	}, e.timeline(in))
}

func TestTraceOfARetriedSendIsInOrder(t *testing.T) {
	t.Parallel()
	e := newInlineEnv(t)
	e.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultRateLimit})
	in := e.inbound("hi")
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	e.workBackup(e.reply(in).ID)
	e.callbacks(in, "sent", "delivered")
	require.Equal(t, []string{
		"webhook.received", "turn.routed", "turn.llm", "turn.reply", "send.attempt", "send.retry",
		"send.attempt", "send.accepted", "status.callback", "status.callback",
	}, e.timeline(in))
}
