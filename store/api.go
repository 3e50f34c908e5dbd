package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Scope limits a query to one tenant's rows or, for the operator, to all of
// them. Every operator-API query takes one, so the tenant filter is always in
// the SQL. The zero Scope matches nothing.
type Scope struct {
	tenantID string
	all      bool
}

// AllTenants is the operator's scope: every tenant's rows.
func AllTenants() Scope { return Scope{all: true} }

// TenantScope is one tenant's scope.
func TenantScope(tenantID string) Scope { return Scope{tenantID: tenantID} }

// TenantID returns the scope's tenant, and false for AllTenants.
func (s Scope) TenantID() (string, bool) { return s.tenantID, !s.all }

// filter returns the SQL condition that keeps col within the scope, adding
// its argument to args.
func (s Scope) filter(col string, args *[]any) string {
	switch {
	case s.all:
		return "TRUE"
	case s.tenantID == "":
		return "FALSE"
	}
	*args = append(*args, s.tenantID)
	return col + " = $" + strconv.Itoa(len(*args))
}

// ConversationView is a conversation as the operator API lists it: with its
// contact and number, so an operator can tell conversations apart.
type ConversationView struct {
	Conversation
	ContactAddress string      `db:"contact_address" json:"contact_address"`
	ContactName    *string     `db:"contact_name" json:"contact_name"`
	ContactOptOut  bool        `db:"contact_opted_out" json:"contact_opted_out"`
	ChannelAddress string      `db:"channel_address" json:"channel_address"`
	ChannelKind    ChannelKind `db:"channel_kind" json:"channel_kind"`
}

const conversationViewSelect = `
	SELECT v.id, v.tenant_id, v.channel_id, v.contact_id, v.status, v.version,
	       v.last_inbound_at, v.last_inbound_message_id, v.created_at, v.updated_at,
	       ct.address AS contact_address, ct.profile_name AS contact_name, ct.opted_out AS contact_opted_out,
	       ch.address AS channel_address, ch.kind AS channel_kind
	FROM conversations v
	JOIN contacts ct ON ct.id = v.contact_id
	JOIN channels ch ON ch.id = v.channel_id`

// ConversationFilter narrows ListConversations. Conversations come newest
// first; BeforeID > 0 continues a page after the conversation with that id.
type ConversationFilter struct {
	Status   ConversationStatus
	BeforeID int64
	Limit    int
}

// ListConversations lists the conversations in scope, newest first.
func ListConversations(ctx context.Context, db DBTX, scope Scope, f ConversationFilter) ([]ConversationView, error) {
	var args []any
	where := scope.filter("v.tenant_id", &args)
	if f.Status != "" {
		args = append(args, f.Status)
		where += " AND v.status = $" + strconv.Itoa(len(args))
	}
	if f.BeforeID > 0 {
		args = append(args, f.BeforeID)
		where += " AND v.id < $" + strconv.Itoa(len(args))
	}
	args = append(args, f.Limit)
	rows, err := db.Query(ctx, conversationViewSelect+` WHERE `+where+` ORDER BY v.id DESC LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("list conversations: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[ConversationView])
	if err != nil {
		return nil, fmt.Errorf("list conversations: %w", err)
	}
	return list, nil
}

// FindConversation returns one conversation in scope.
func FindConversation(ctx context.Context, db DBTX, scope Scope, id int64) (ConversationView, error) {
	args := []any{id}
	where := scope.filter("v.tenant_id", &args)
	rows, err := db.Query(ctx, conversationViewSelect+` WHERE v.id = $1 AND `+where, args...)
	if err != nil {
		return ConversationView{}, fmt.Errorf("find conversation: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[ConversationView])
	if err != nil {
		return ConversationView{}, notFound(err)
	}
	return c, nil
}

// ListMessages lists a conversation's messages in scope, oldest first;
// afterID > 0 continues a page after the message with that id.
func ListMessages(ctx context.Context, db DBTX, scope Scope, conversationID, afterID int64, limit int) ([]Message, error) {
	args := []any{conversationID, afterID, limit}
	where := scope.filter("tenant_id", &args)
	rows, err := db.Query(ctx, `SELECT `+MessageColumns+` FROM messages
		WHERE conversation_id = $1 AND id > $2 AND `+where+` ORDER BY id LIMIT $3`, args...)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[Message])
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	return list, nil
}

// FindMessage returns one message in scope.
func FindMessage(ctx context.Context, db DBTX, scope Scope, id int64) (Message, error) {
	args := []any{id}
	where := scope.filter("tenant_id", &args)
	return oneMessage(ctx, db, `SELECT `+MessageColumns+` FROM messages WHERE id = $1 AND `+where, args)
}

// MessageByTwilioSID finds a message in scope by its Twilio SID.
func MessageByTwilioSID(ctx context.Context, db DBTX, scope Scope, sid string) (Message, error) {
	args := []any{sid}
	where := scope.filter("tenant_id", &args)
	return oneMessage(ctx, db, `SELECT `+MessageColumns+` FROM messages WHERE twilio_sid = $1 AND `+where, args)
}

func oneMessage(ctx context.Context, db DBTX, sql string, args []any) (Message, error) {
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return Message{}, fmt.Errorf("find message: %w", err)
	}
	m, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Message])
	if err != nil {
		return Message{}, notFound(err)
	}
	return m, nil
}

// TraceEvent is one entry of a message's trace.
type TraceEvent struct {
	MessageID int64 `db:"message_id" json:"message_id"`
	// Seq is the event's place in its story (an inbound message and its
	// reply share one count: 1, 2, 3, ...), in the order the events were
	// written (migration 0011): the trace's order. Nil for events from
	// before it existed.
	Seq    *int64          `db:"seq" json:"seq"`
	At     time.Time       `db:"at" json:"at"`
	Kind   string          `db:"kind" json:"kind"`
	Detail json.RawMessage `db:"detail" json:"detail"`
}

// RelatedMessages returns the ids of the messages whose story is part of
// this one's: the reply to it, or the message it replies to.
func RelatedMessages(ctx context.Context, db DBTX, scope Scope, m Message) ([]int64, error) {
	args := []any{m.ID}
	where := scope.filter("tenant_id", &args)
	rows, err := db.Query(ctx, `SELECT id FROM messages WHERE reply_to_id = $1 AND `+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("related messages: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("related messages: %w", err)
	}
	if m.ReplyToID != nil {
		ids = append(ids, *m.ReplyToID)
	}
	return ids, nil
}

// MessageEvents returns the traces of messages in scope as one timeline,
// in the order things happened: by seq (see TraceEvent), not by the clock.
func MessageEvents(ctx context.Context, db DBTX, scope Scope, messageIDs []int64) ([]TraceEvent, error) {
	args := []any{messageIDs}
	where := scope.filter("tenant_id", &args)
	// The stored seq is a database-wide number drawn as each event is
	// written; the story's count is its rank among the story's events.
	rows, err := db.Query(ctx, `SELECT message_id, at, kind, detail,
		       CASE WHEN seq IS NOT NULL THEN row_number() OVER (PARTITION BY seq IS NULL ORDER BY seq, id) END AS seq
		FROM message_events
		WHERE message_id = ANY($1) AND `+where+` ORDER BY seq NULLS FIRST, at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("message events: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[TraceEvent])
	if err != nil {
		return nil, fmt.Errorf("message events: %w", err)
	}
	return list, nil
}

// MessageJob is a River job working on a message, as its trace shows it:
// a stuck or failing message is explained by its job's state and errors.
type MessageJob struct {
	ID          int64           `db:"id" json:"id"`
	Kind        string          `db:"kind" json:"kind"`
	State       string          `db:"state" json:"state"`
	Attempt     int             `db:"attempt" json:"attempt"`
	MaxAttempts int             `db:"max_attempts" json:"max_attempts"`
	ScheduledAt time.Time       `db:"scheduled_at" json:"scheduled_at"`
	FinalizedAt *time.Time      `db:"finalized_at" json:"finalized_at"`
	Errors      json.RawMessage `db:"errors" json:"errors"`
}

// MessageJobs returns the River jobs whose args name one of the messages
// (their turn or their send), oldest first. args @> uses River's GIN index
// on args.
func MessageJobs(ctx context.Context, db DBTX, scope Scope, messageIDs []int64) ([]MessageJob, error) {
	var list []MessageJob
	for _, id := range messageIDs {
		filter := map[string]any{"message_id": id}
		if t, ok := scope.TenantID(); ok {
			filter["tenant_id"] = t
		}
		b, err := json.Marshal(filter)
		if err != nil {
			return nil, fmt.Errorf("message jobs: %w", err)
		}
		rows, err := db.Query(ctx, `SELECT id, kind, state::text AS state, attempt, max_attempts, scheduled_at, finalized_at,
			       COALESCE(to_jsonb(errors), '[]'::jsonb) AS errors
			FROM river_job WHERE args @> $1::jsonb ORDER BY id`, b)
		if err != nil {
			return nil, fmt.Errorf("message jobs: %w", err)
		}
		jobs, err := pgx.CollectRows(rows, pgx.RowToStructByName[MessageJob])
		if err != nil {
			return nil, fmt.Errorf("message jobs: %w", err)
		}
		list = append(list, jobs...)
	}
	return list, nil
}

// QueueCount is how many River jobs of one kind are in one state.
type QueueCount struct {
	Kind  string `db:"kind"`
	State string `db:"state"`
	Count int64  `db:"count"`
	// OldestSeconds is the age of the longest-waiting job: for available
	// jobs, how far the workers lag behind.
	OldestSeconds float64 `db:"oldest_seconds"`
}

// QueueDepth counts River jobs by kind and state, leaving out completed jobs
// (the bulk of the table): a cheap query on River's state indexes.
func QueueDepth(ctx context.Context, db DBTX) ([]QueueCount, error) {
	rows, err := db.Query(ctx, `
		SELECT kind, state::text AS state, count(*) AS count,
		       COALESCE(extract(epoch FROM now() - min(scheduled_at)), 0)::float8 AS oldest_seconds
		FROM river_job
		WHERE state IN ('available', 'pending', 'running', 'retryable', 'scheduled', 'cancelled', 'discarded')
		GROUP BY kind, state`)
	if err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[QueueCount])
	if err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	return list, nil
}

// errClosed is returned for a change a closed conversation cannot take.
var errClosed = Refuse(ErrConflict, "the conversation is closed")

// Handoff hands a conversation in scope to a person (ConversationHuman) or
// back to the bot (ConversationBot). A closed conversation is ErrConflict.
func Handoff(ctx context.Context, db DBTX, scope Scope, id int64, to ConversationStatus) (Conversation, error) {
	if to != ConversationHuman && to != ConversationBot {
		return Conversation{}, fmt.Errorf("handoff: %q is not human or bot", to)
	}
	args := []any{id, to}
	where := scope.filter("tenant_id", &args)
	rows, err := db.Query(ctx, `
		UPDATE conversations SET status = $2, handoff_reason = '`+HandoffByOperator+`', version = version + 1, updated_at = now()
		WHERE id = $1 AND status <> 'closed' AND `+where+`
		RETURNING `+ConversationColumns, args...)
	if err != nil {
		return Conversation{}, fmt.Errorf("handoff: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Conversation])
	if errors.Is(err, pgx.ErrNoRows) {
		if _, ferr := FindConversation(ctx, db, scope, id); ferr != nil {
			return Conversation{}, ferr
		}
		return Conversation{}, errClosed
	}
	if err != nil {
		return Conversation{}, fmt.Errorf("handoff: %w", err)
	}
	return c, nil
}
