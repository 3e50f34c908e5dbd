package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Media is one attachment of an inbound message (Twilio's MediaUrlN/MediaContentTypeN).
type Media struct {
	URL         string `json:"url"`
	ContentType string `json:"content_type,omitempty"`
}

// Inbound is an inbound message as the webhook decoded it.
type Inbound struct {
	TenantID    string
	ChannelID   int64
	From        string
	WaID        string
	ProfileName string
	MessageSID  string
	Body        string
	Media       []Media
	// OptOut is set when the body is an opt-out (true) or opt-in (false) keyword.
	OptOut *bool
	// Event is recorded as the message's first trace event ("webhook.received").
	Event map[string]any
}

// InboundResult says what InsertInbound wrote.
type InboundResult struct {
	Duplicate          bool
	MessageID          int64
	ConversationID     int64
	ContactID          int64
	ConversationStatus ConversationStatus
	OptedOut           bool
}

// insertInboundSQL records one inbound message in one statement: it upserts
// the contact (identity and opt-out), finds or opens the conversation, inserts
// the message, unique on its MessageSid, and its first trace event. The
// conversation's last_inbound_* columns follow from a trigger on messages, so
// they move only when the message row is really inserted.
const insertInboundSQL = `
	WITH c AS (
		INSERT INTO contacts (tenant_id, address, wa_id, profile_name, opted_out, opted_out_at)
		VALUES ($1, $2, NULLIF($3, ''), NULLIF($4, ''), COALESCE($5::boolean, false),
		        CASE WHEN $5::boolean THEN now() END)
		ON CONFLICT (tenant_id, address) DO UPDATE SET
			wa_id = COALESCE(EXCLUDED.wa_id, contacts.wa_id),
			profile_name = COALESCE(EXCLUDED.profile_name, contacts.profile_name),
			opted_out = COALESCE($5::boolean, contacts.opted_out),
			opted_out_at = CASE WHEN $5::boolean IS NULL THEN contacts.opted_out_at
			                    WHEN $5::boolean THEN now() END,
			updated_at = now()
		RETURNING id, opted_out
	), conv AS (
		INSERT INTO conversations (tenant_id, channel_id, contact_id)
		SELECT $1, $6, c.id FROM c
		ON CONFLICT (channel_id, contact_id) WHERE status <> 'closed' DO UPDATE SET
			version = conversations.version + 1,
			updated_at = now()
		RETURNING id, status
	), m AS (
		INSERT INTO messages (tenant_id, conversation_id, direction, author, body, media, status, twilio_sid, during_handoff)
		SELECT $1, conv.id, 'inbound', 'contact', $7, $8, 'received', $9, conv.status = 'human'
		FROM conv
		ON CONFLICT (twilio_sid) DO NOTHING
		RETURNING id
	), e AS (
		INSERT INTO message_events (tenant_id, message_id, kind, detail)
		SELECT $1, m.id, 'webhook.received', $10 FROM m
	)
	SELECT c.id, c.opted_out, conv.id, conv.status, (SELECT m.id FROM m)
	FROM c, conv`

// inboundArgs are insertInboundSQL's arguments for in.
func inboundArgs(in Inbound) ([]any, error) {
	media := in.Media
	if media == nil {
		media = []Media{}
	}
	mediaJSON, err := json.Marshal(media)
	if err != nil {
		return nil, err
	}
	event := in.Event
	if event == nil {
		event = map[string]any{}
	}
	eventJSON, err := json.Marshal(event)
	if err != nil {
		return nil, err
	}
	return []any{in.TenantID, in.From, in.WaID, in.ProfileName, in.OptOut, in.ChannelID,
		in.Body, mediaJSON, in.MessageSID, eventJSON}, nil
}

// scanInbound reads insertInboundSQL's one row.
func scanInbound(row pgx.Row) (InboundResult, error) {
	var res InboundResult
	var msgID *int64
	if err := row.Scan(&res.ContactID, &res.OptedOut, &res.ConversationID, &res.ConversationStatus, &msgID); err != nil {
		return InboundResult{}, fmt.Errorf("insert inbound: %w", err)
	}
	if msgID == nil {
		return InboundResult{Duplicate: true, ConversationID: res.ConversationID}, nil
	}
	res.MessageID = *msgID
	return res, nil
}

// InsertInbound records an inbound message (see insertInboundSQL). For a
// MessageSid already stored it returns Duplicate and writes no message, event
// or conversation pointer; the contact upsert it made is idempotent.
func InsertInbound(ctx context.Context, tx DBTX, in Inbound) (InboundResult, error) {
	args, err := inboundArgs(in)
	if err != nil {
		return InboundResult{}, fmt.Errorf("insert inbound: %w", err)
	}
	return scanInbound(tx.QueryRow(ctx, insertInboundSQL, args...))
}

// InsertInboundBatch records many inbound messages in one round trip, inside
// the caller's transaction: group commit for ingest. Any error means the
// transaction is aborted and the caller must roll it back (and may retry the
// messages one by one to isolate the bad one).
func InsertInboundBatch(ctx context.Context, tx DBTX, ins []Inbound) ([]InboundResult, error) {
	b := &pgx.Batch{}
	for _, in := range ins {
		args, err := inboundArgs(in)
		if err != nil {
			return nil, fmt.Errorf("insert inbound: %w", err)
		}
		b.Queue(insertInboundSQL, args...)
	}
	br := tx.SendBatch(ctx, b)
	out := make([]InboundResult, len(ins))
	for i := range ins {
		res, err := scanInbound(br.QueryRow())
		if err != nil {
			_ = br.Close()
			return nil, err
		}
		out[i] = res
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("insert inbound batch: %w", err)
	}
	return out, nil
}

// AddEvent appends one event to a message's trace.
func AddEvent(ctx context.Context, db DBTX, tenantID string, messageID int64, kind string, detail any) error {
	if detail == nil {
		detail = map[string]any{}
	}
	b, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("add event: %w", err)
	}
	_, err = db.Exec(ctx, `INSERT INTO message_events (tenant_id, message_id, kind, detail) VALUES ($1, $2, $3, $4)`,
		tenantID, messageID, kind, b)
	if err != nil {
		return fmt.Errorf("add event: %w", err)
	}
	return nil
}

// Event is one trace event for AddEvents.
type Event struct {
	Kind   string `json:"kind"`
	Detail any    `json:"detail"`
}

// AddEvents appends several events to a message's trace in one statement,
// in order.
func AddEvents(ctx context.Context, db DBTX, tenantID string, messageID int64, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	b, err := eventsJSON(events)
	if err != nil {
		return err
	}
	if _, err = db.Exec(ctx, addEventsSQL, tenantID, messageID, b); err != nil {
		return fmt.Errorf("add events: %w", err)
	}
	return nil
}

const addEventsSQL = `
		INSERT INTO message_events (tenant_id, message_id, kind, detail)
		SELECT $1, $2, e.value->>'kind', e.value->'detail'
		FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS e(value, n) ORDER BY e.n`

func eventsJSON(events []Event) ([]byte, error) {
	for i := range events {
		if events[i].Detail == nil {
			events[i].Detail = map[string]any{}
		}
	}
	b, err := json.Marshal(events)
	if err != nil {
		return nil, fmt.Errorf("add events: %w", err)
	}
	return b, nil
}
