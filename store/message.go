package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Message is one message as the API shows it (docs/operations.md).
type Message struct {
	ID             int64         `db:"id" json:"id"`
	TenantID       string        `db:"tenant_id" json:"-"`
	ConversationID int64         `db:"conversation_id" json:"conversation_id"`
	Direction      Direction     `db:"direction" json:"direction"`
	Author         Author        `db:"author" json:"author"`
	Body           string        `db:"body" json:"body"`
	Media          []Media       `db:"media" json:"media"`
	Transcript     *string       `db:"transcript" json:"transcript,omitempty"` // a voice note's words (SetTranscript)
	Status         MessageStatus `db:"status" json:"status"`
	ErrorCode      *string       `db:"error_code" json:"error_code"`
	ErrorReason    *string       `db:"error_reason" json:"error_reason,omitempty"`
	TwilioSID      *string       `db:"twilio_sid" json:"twilio_sid"`
	ReplyToID      *int64        `db:"reply_to_id" json:"reply_to_id,omitempty"`
	DuringHandoff  bool          `db:"during_handoff" json:"during_handoff"`
	Agent          *string       `db:"agent" json:"agent,omitempty"`
	CreatedAt      time.Time     `db:"created_at" json:"created_at"`
	UpdatedAt      time.Time     `db:"updated_at" json:"updated_at"`
}

// MessageColumns is the explicit column list a Message scans from.
const MessageColumns = `id, tenant_id, conversation_id, direction, author, body, media, transcript, status,
	error_code, error_reason, twilio_sid, reply_to_id, during_handoff, agent, created_at, updated_at`

// GetMessage returns one message of one tenant.
func GetMessage(ctx context.Context, db DBTX, tenantID string, id int64) (Message, error) {
	rows, err := db.Query(ctx, `SELECT `+MessageColumns+` FROM messages WHERE id = $1 AND tenant_id = $2`, id, tenantID)
	if err != nil {
		return Message{}, fmt.Errorf("get message: %w", err)
	}
	m, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Message])
	if err != nil {
		return Message{}, notFound(err)
	}
	return m, nil
}

// Outbound is a message Conversa will send: a bot reply or a human's message.
type Outbound struct {
	TenantID       string
	ConversationID int64
	// Author is AuthorBot or AuthorHuman.
	Author Author
	Body   string
	// ReplyToID is, for a bot reply, the inbound message closing the turn.
	// It is unique: a turn can write one reply only.
	ReplyToID *int64
	Agent     string
	// CreditsReserved is what the send refunds if it fails.
	CreditsReserved int
	// Event is recorded as the message's first trace event.
	EventKind string
	Event     map[string]any
}

const insertOutboundSQL = `
		WITH m AS (
			INSERT INTO messages (tenant_id, conversation_id, direction, author, body, status, reply_to_id, agent, credits_reserved)
			SELECT $1, c.id, 'outbound', $3, $4, 'pending', $5, NULLIF($6, ''), $7
			FROM conversations c WHERE c.id = $2 AND c.tenant_id = $1
			ON CONFLICT (reply_to_id) DO NOTHING
			RETURNING id
		), e AS (
			INSERT INTO message_events (tenant_id, message_id, kind, detail)
			SELECT $1, m.id, $8, $9 FROM m
		)
		SELECT id FROM m`

// outboundArgs are insertOutboundSQL's arguments for o.
func outboundArgs(o Outbound) ([]any, error) {
	if o.Author != AuthorBot && o.Author != AuthorHuman {
		return nil, fmt.Errorf("insert outbound: author %q is not bot or human", o.Author)
	}
	event := o.Event
	if event == nil {
		event = map[string]any{}
	}
	eventJSON, err := json.Marshal(event)
	if err != nil {
		return nil, fmt.Errorf("insert outbound: %w", err)
	}
	kind := o.EventKind
	if kind == "" {
		kind = "message.created"
	}
	return []any{o.TenantID, o.ConversationID, o.Author, o.Body, o.ReplyToID, o.Agent, o.CreditsReserved, kind, eventJSON}, nil
}

// InsertOutbound writes an outbound message as pending, with its first trace
// event. A second reply to the same turn is ErrDuplicate, and leaves the
// transaction usable (ON CONFLICT, not a failed statement).
func InsertOutbound(ctx context.Context, db DBTX, o Outbound) (int64, error) {
	args, err := outboundArgs(o)
	if err != nil {
		return 0, err
	}
	var id int64
	err = db.QueryRow(ctx, insertOutboundSQL, args...).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		// Either the conversation is not this tenant's, or the turn already has its reply.
		if _, cerr := GetConversation(ctx, db, o.TenantID, o.ConversationID); cerr != nil {
			return 0, cerr
		}
		return 0, ErrDuplicate
	}
	if err != nil {
		return 0, fmt.Errorf("insert outbound: %w", err)
	}
	return id, nil
}
