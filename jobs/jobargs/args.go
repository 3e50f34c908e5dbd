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
