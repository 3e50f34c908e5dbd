package jobargs

import (
	"context"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Queue names. Turns and sends get their own queues so a slow LLM never holds
// up delivery of replies that are already written.
const (
	QueueReply = "reply"
	QueueSend  = "send"
)

// ReplyArgs asks for one conversation turn: the answer to the conversation's
// inbound messages up to and including MessageID. A turn whose MessageID is no
// longer the conversation's newest inbound message has been superseded.
type ReplyArgs struct {
	TenantID       string `json:"tenant_id"`
	ConversationID int64  `json:"conversation_id" river:"unique"`
	MessageID      int64  `json:"message_id" river:"unique"`
}

// Kind is stable: never rename a shipped job kind.
func (ReplyArgs) Kind() string { return "conversa.reply" }

// InsertOpts makes a turn unique per (conversation, closing message).
func (ReplyArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       QueueReply,
		MaxAttempts: 10,
		UniqueOpts:  river.UniqueOpts{ByArgs: true},
	}
}

// SendArgs asks for one outbound message to be delivered through Twilio.
type SendArgs struct {
	TenantID  string `json:"tenant_id"`
	MessageID int64  `json:"message_id" river:"unique"`
}

// Kind is stable: never rename a shipped job kind.
func (SendArgs) Kind() string { return "conversa.send" }

// InsertOpts makes a send unique per outbound message.
func (SendArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       QueueSend,
		MaxAttempts: 12,
		UniqueOpts:  river.UniqueOpts{ByArgs: true},
	}
}

// ShortDelayMiddleware makes a job scheduled at most MaxDelay ahead insert
// as "available" with a future scheduled_at instead of "scheduled".
//
// River inserts any job with a ScheduledAt as "scheduled", and only the
// leader's scheduler promotes those, every 5 s; a 1.5 s debounce would then
// answer after 1.5 to 6.5 s. An available job is fetched as soon as its
// scheduled_at has passed (the producer's fetch requires scheduled_at <= now),
// so the turn starts within FetchPollInterval of the debounce ending.
type ShortDelayMiddleware struct {
	river.MiddlewareDefaults
	MaxDelay time.Duration
	Now      func() time.Time
}

// InsertMany implements rivertype.JobInsertMiddleware.
func (m *ShortDelayMiddleware) InsertMany(ctx context.Context, params []*rivertype.JobInsertParams, doInner func(context.Context) ([]*rivertype.JobInsertResult, error)) ([]*rivertype.JobInsertResult, error) {
	now := m.Now()
	for _, p := range params {
		if p.State == rivertype.JobStateScheduled && p.ScheduledAt != nil && p.ScheduledAt.Sub(now) <= m.MaxDelay {
			p.State = rivertype.JobStateAvailable
		}
	}
	return doInner(ctx)
}

// QueueEvents is the event webhooks' queue: a slow or failing receiver
// holds only its own workers here, never a turn's or a send's.
const QueueEvents = "events"

// EventArgs asks for one event to be delivered to one endpoint (README,
// "Event webhooks"): unique on both, so the relay can never make a second job
// for the pair.
type EventArgs struct {
	TenantID   string `json:"tenant_id"`
	EndpointID int64  `json:"endpoint_id" river:"unique"`
	EventID    int64  `json:"event_id" river:"unique"`
}

// Kind is stable: never rename a shipped job kind.
func (EventArgs) Kind() string { return "conversa.event" }

// EventMaxAttempts makes a failing endpoint's retries last about 24 h with
// the back-off of jobs.EventWorker.NextRetry (jobs.TestEventRetriesLastADay).
const EventMaxAttempts = 36

// InsertOpts makes a delivery unique per (endpoint, event).
func (EventArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       QueueEvents,
		MaxAttempts: EventMaxAttempts,
		UniqueOpts:  river.UniqueOpts{ByArgs: true},
	}
}

// QueueMaintenance runs the periodic jobs and the broadcasts' checks,
// apart from turns and sends.
const QueueMaintenance = "maintenance"

// BroadcastSendPriority is the River priority of a broadcast's sends (1 is
// the highest, a reply's): replies and a person's messages go ahead of a
// broadcast's backlog on the send queue.
const BroadcastSendPriority = 2

// BroadcastSendOpts are the insert options of a broadcast message's
// conversa.send job: SendArgs' own, at BroadcastSendPriority, due at at
// (now when at is not in the future). A broadcast spreads its sends at the
// sender's rate, so they come due one by one: all due at once, most of them
// would wake, find no pacing slot and snooze again, over and over (on a
// 1/s SMS number, some 180 useless job runs a second for hours).
func BroadcastSendOpts(at time.Time) *river.InsertOpts {
	o := &river.InsertOpts{Priority: BroadcastSendPriority}
	if at.After(time.Now()) {
		o.ScheduledAt = at
	}
	return o
}

// BroadcastArgs asks for a broadcast to be finished once every one of its
// messages has a final status (it snoozes until then).
type BroadcastArgs struct {
	TenantID    string `json:"tenant_id"`
	BroadcastID int64  `json:"broadcast_id" river:"unique"`
}

// Kind is stable: never rename a shipped job kind.
func (BroadcastArgs) Kind() string { return "conversa.broadcast" }

// InsertOpts makes the check unique per broadcast.
func (BroadcastArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:      QueueMaintenance,
		UniqueOpts: river.UniqueOpts{ByArgs: true},
	}
}
