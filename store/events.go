package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Event webhooks (README, "Event webhooks"; migration 0016). Events are
// written by the database in the transaction of the change they report:
// triggers on messages and conversations write message.received,
// message.replied, message.status and conversation.handoff, and RecordEvent
// writes the others (turn.gave_up, broadcast.finished), all through one SQL
// function, conversa_record_event, under one rule, conversa_wants_events
// (only while the tenant has an endpoint). An event holds ids and codes only; its
// payload's personal parts (addresses, bodies) are read from the message
// when it is delivered or listed (EventPayloads), so they are gone from
// events the moment they are erased from the message.

// Event types (SPEC §11).
const (
	EventMessageReceived     = "message.received"
	EventMessageReplied      = "message.replied"
	EventMessageStatus       = "message.status"
	EventConversationHandoff = "conversation.handoff"
	EventTurnGaveUp          = "turn.gave_up"
	EventBroadcastFinished   = "broadcast.finished"
)

// EventTypes is every event type, in the order the spec lists them.
var EventTypes = []string{EventMessageReceived, EventMessageReplied, EventMessageStatus,
	EventConversationHandoff, EventTurnGaveUp, EventBroadcastFinished}

// Handoff reasons: why a conversation changed hands (conversation.handoff's
// reason). Codes only: a model's own words never go into an event.
const (
	HandoffByOperator = "operator"        // a person, through the API or the console
	HandoffByAgent    = "agent"           // the agent asked for a person
	HandoffGaveUp     = "llm_unavailable" // no model answered in time (turn.gave_up)
)

// NewEvent is an event RecordEvent writes. Data holds ids, statuses, codes
// and counts only, never an address or a body.
type NewEvent struct {
	TenantID       string
	Type           string
	MessageID      int64 // 0: none
	ConversationID int64 // 0: none
	Data           map[string]any
}

// RecordEvent writes ev in tx, the transaction of the change it reports,
// when the tenant has at least one webhook endpoint.
func RecordEvent(ctx context.Context, tx DBTX, ev NewEvent) error {
	if !slices.Contains(EventTypes, ev.Type) {
		return fmt.Errorf("record event: unknown type %q", ev.Type)
	}
	data := ev.Data
	if data == nil {
		data = map[string]any{}
	}
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("record event: %w", err)
	}
	_, err = tx.Exec(ctx, `SELECT conversa_record_event($1, $2, NULLIF($3, 0), NULLIF($4, 0), $5) WHERE conversa_wants_events($1)`,
		ev.TenantID, ev.Type, ev.MessageID, ev.ConversationID, b)
	if err != nil {
		return fmt.Errorf("record event: %w", err)
	}
	return nil
}

// Endpoint is one of a tenant's event webhook endpoints. Events nil means
// every type.
type Endpoint struct {
	ID            int64     `json:"-" db:"id"`
	TenantID      string    `json:"tenant_id" db:"tenant_id"`
	Name          string    `json:"name" db:"name"`
	URL           string    `json:"url" db:"url"`
	Events        []string  `json:"events" db:"events"`
	IncludeBodies bool      `json:"include_bodies" db:"include_bodies"`
	CreatedAt     time.Time `json:"created_at" db:"created_at"`
	UpdatedAt     time.Time `json:"updated_at" db:"updated_at"`
}

// Wants reports whether the endpoint takes events of type typ.
func (e Endpoint) Wants(typ string) bool { return e.Events == nil || slices.Contains(e.Events, typ) }

const endpointColumns = `id, tenant_id, name, url, events, include_bodies, created_at, updated_at`

// PutEndpoint creates or replaces the tenant's endpoint e.Name; created
// says which. The caller has checked the name, URL and types.
func PutEndpoint(ctx context.Context, db DBTX, e Endpoint) (Endpoint, bool, error) {
	rows, err := db.Query(ctx, `
		INSERT INTO webhook_endpoints (tenant_id, name, url, events, include_bodies)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (tenant_id, name) DO UPDATE SET url = EXCLUDED.url, events = EXCLUDED.events,
			include_bodies = EXCLUDED.include_bodies, updated_at = now()
		RETURNING `+endpointColumns+`, (xmax = 0) AS created`, e.TenantID, e.Name, e.URL, e.Events, e.IncludeBodies)
	if err != nil {
		return Endpoint{}, false, fmt.Errorf("put endpoint: %w", err)
	}
	type row struct {
		Endpoint
		Created bool `db:"created"`
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[row])
	if err != nil {
		if isForeignKeyViolation(err) {
			return Endpoint{}, false, ErrNotFound
		}
		return Endpoint{}, false, fmt.Errorf("put endpoint: %w", notFound(err))
	}
	return r.Endpoint, r.Created, nil
}

// GetEndpoint returns the tenant's endpoint name.
func GetEndpoint(ctx context.Context, db DBTX, tenantID, name string) (Endpoint, error) {
	rows, err := db.Query(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoints WHERE tenant_id = $1 AND name = $2`,
		tenantID, name)
	if err != nil {
		return Endpoint{}, fmt.Errorf("get endpoint: %w", err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Endpoint])
	if err != nil {
		return Endpoint{}, notFound(err)
	}
	return e, nil
}

// ListEndpoints returns the tenant's endpoints by name.
func ListEndpoints(ctx context.Context, db DBTX, tenantID string) ([]Endpoint, error) {
	rows, err := db.Query(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY name`,
		tenantID)
	if err != nil {
		return nil, fmt.Errorf("list endpoints: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[Endpoint])
	if err != nil {
		return nil, fmt.Errorf("list endpoints: %w", notFound(err))
	}
	return list, nil
}

// DeleteEndpoint removes the tenant's endpoint name; its undelivered
// events are then dropped by their jobs.
func DeleteEndpoint(ctx context.Context, db DBTX, tenantID, name string) error {
	tag, err := db.Exec(ctx, `DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND name = $2`, tenantID, name)
	if err != nil {
		return fmt.Errorf("delete endpoint: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// EventDelivery is one (endpoint, event) the relay hands to a conversa.event job.
type EventDelivery struct {
	TenantID   string
	EndpointID int64
	EventID    int64
}

// eventRelayLock is the advisory lock one relay transaction at a time holds.
const eventRelayLock = 0x636f6e7665727361 // "conversa"

// RelayEvents takes up to limit committed events not yet relayed, gives
// them their seq (in id order), and returns one delivery per endpoint of
// their tenant that wants each, all in tx; the caller inserts the jobs in
// tx and commits. ok is false when another relay transaction holds the
// relay (then nothing was taken). Run it in a transaction.
func RelayEvents(ctx context.Context, tx DBTX, limit int) (deliveries []EventDelivery, relayed int, ok bool, err error) {
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, int64(eventRelayLock)).Scan(&ok); err != nil {
		return nil, 0, false, fmt.Errorf("relay events: %w", err)
	}
	if !ok {
		return nil, 0, false, nil
	}
	rows, err := tx.Query(ctx, `
		WITH o AS (
			-- nextval over an already ordered subquery: seq follows id.
			SELECT id, nextval('event_relay_seq') AS seq
			FROM (SELECT id FROM events WHERE seq IS NULL ORDER BY id LIMIT $1) x
		), s AS (
			UPDATE events SET seq = o.seq FROM o
			WHERE events.id = o.id
			RETURNING events.id, events.tenant_id, events.type
		)
		SELECT s.id, s.tenant_id, w.id
		FROM s LEFT JOIN webhook_endpoints w
		  ON w.tenant_id = s.tenant_id AND (w.events IS NULL OR s.type = ANY(w.events))
		ORDER BY s.id, w.id`, limit)
	if err != nil {
		return nil, 0, true, fmt.Errorf("relay events: %w", err)
	}
	defer rows.Close()
	last := int64(0)
	for rows.Next() {
		var d EventDelivery
		var endpoint *int64
		if err := rows.Scan(&d.EventID, &d.TenantID, &endpoint); err != nil {
			return nil, 0, true, fmt.Errorf("relay events: %w", err)
		}
		if d.EventID != last {
			relayed++
			last = d.EventID
		}
		if endpoint != nil {
			d.EndpointID = *endpoint
			deliveries = append(deliveries, d)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, true, fmt.Errorf("relay events: %w", err)
	}
	return deliveries, relayed, true, nil
}

// EventPayload is an event as a receiver gets it (SPEC §11).
type EventPayload struct {
	ID        int64          `json:"id"`
	Type      string         `json:"type"`
	CreatedAt time.Time      `json:"created_at"`
	TenantID  string         `json:"tenant_id"`
	Data      map[string]any `json:"data"`
}

// eventSelect reads events e with what their payloads need from the
// message, its conversation's contact and sender number.
const eventSelect = `
	SELECT e.id, e.type, e.created_at, e.tenant_id, e.message_id, e.conversation_id, e.data, e.seq,
	       m.twilio_sid, m.body, m.reply_to_id, m.erased_at IS NOT NULL AS erased,
	       ct.address AS contact_address, ch.address AS channel_address
	FROM events e
	LEFT JOIN messages m ON m.id = e.message_id
	LEFT JOIN conversations cv ON cv.id = e.conversation_id
	LEFT JOIN contacts ct ON ct.id = cv.contact_id
	LEFT JOIN channels ch ON ch.id = cv.channel_id`

type eventRow struct {
	ID             int64          `db:"id"`
	Type           string         `db:"type"`
	CreatedAt      time.Time      `db:"created_at"`
	TenantID       string         `db:"tenant_id"`
	MessageID      *int64         `db:"message_id"`
	ConversationID *int64         `db:"conversation_id"`
	Data           map[string]any `db:"data"`
	Seq            *int64         `db:"seq"`
	TwilioSID      *string        `db:"twilio_sid"`
	Body           *string        `db:"body"`
	ReplyToID      *int64         `db:"reply_to_id"`
	Erased         *bool          `db:"erased"`
	ContactAddress *string        `db:"contact_address"`
	ChannelAddress *string        `db:"channel_address"`
}

// payload builds the event's payload: its own data, its ids, and what its
// type reports of the message; the body only with includeBodies, and no
// address or body of an erased message.
func (r eventRow) payload(includeBodies bool) EventPayload {
	data := map[string]any{}
	for k, v := range r.Data {
		data[k] = v
	}
	if r.MessageID != nil {
		data["message_id"] = *r.MessageID
	}
	if r.ConversationID != nil {
		data["conversation_id"] = *r.ConversationID
	}
	erased := r.Erased != nil && *r.Erased
	switch r.Type {
	case EventMessageReceived:
		data["message_sid"] = r.TwilioSID
		data["from"], data["to"] = nil, r.ChannelAddress
		if !erased && r.ContactAddress != nil && !strings.HasPrefix(*r.ContactAddress, "erased:") {
			data["from"] = *r.ContactAddress
		}
	case EventMessageReplied:
		data["reply_to_id"] = r.ReplyToID
	}
	if includeBodies && (r.Type == EventMessageReceived || r.Type == EventMessageReplied) {
		data["body"] = nil
		if !erased && r.Body != nil {
			data["body"] = *r.Body
		}
	}
	return EventPayload{ID: r.ID, Type: r.Type, CreatedAt: r.CreatedAt.UTC(), TenantID: r.TenantID, Data: data}
}

// DeliveryPayload is what the conversa.event job of (endpointID, eventID)
// POSTs: the endpoint's URL, the exact body, and the tenant's signing
// secrets to sign it with.
type DeliveryPayload struct {
	URL       string
	Body      []byte
	Type      string
	CreatedAt time.Time
	Secrets   []string
}

// LoadEventDelivery returns what to POST for one (endpoint, event) of a
// tenant, in one round trip, or ErrNotFound when the endpoint or the event
// is gone (deleted, pruned): nothing to send.
func LoadEventDelivery(ctx context.Context, db DBTX, sealer *Sealer, tenantID string, endpointID, eventID int64) (DeliveryPayload, error) {
	rows, err := db.Query(ctx, `
		SELECT w.url, w.include_bodies, t.signing_secret_enc, t.signing_secret_prev_enc,
		       COALESCE(t.signing_secret_prev_until > now(), false) AS prev_valid, ev.*
		FROM webhook_endpoints w
		JOIN tenants t ON t.id = w.tenant_id
		CROSS JOIN LATERAL (`+eventSelect+` WHERE e.id = $3 AND e.tenant_id = w.tenant_id) ev
		WHERE w.id = $1 AND w.tenant_id = $2`, endpointID, tenantID, eventID)
	if err != nil {
		return DeliveryPayload{}, fmt.Errorf("load event delivery: %w", err)
	}
	type row struct {
		URL           string `db:"url"`
		IncludeBodies bool   `db:"include_bodies"`
		Cur           []byte `db:"signing_secret_enc"`
		Prev          []byte `db:"signing_secret_prev_enc"`
		PrevValid     bool   `db:"prev_valid"`
		eventRow
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[row])
	if err != nil {
		return DeliveryPayload{}, fmt.Errorf("load event delivery: %w", notFound(err))
	}
	secrets, err := openSigningSecrets(ctx, db, sealer, tenantID, r.Cur, r.Prev, r.PrevValid)
	if err != nil {
		return DeliveryPayload{}, err
	}
	body, err := json.Marshal(r.payload(r.IncludeBodies))
	if err != nil {
		return DeliveryPayload{}, fmt.Errorf("load event delivery: %w", err)
	}
	return DeliveryPayload{URL: r.URL, Body: body, Type: r.Type, CreatedAt: r.CreatedAt, Secrets: secrets}, nil
}

// ListEvents returns the tenant's relayed events after the event after (0:
// from the oldest kept), in the order they committed, at most limit+1 of
// them (the extra one says there is a next page).
func ListEvents(ctx context.Context, db DBTX, tenantID string, after int64, limit int, includeBodies bool) ([]EventPayload, error) {
	var afterSeq int64
	if after > 0 {
		err := db.QueryRow(ctx, `SELECT seq FROM events WHERE id = $1 AND tenant_id = $2 AND seq IS NOT NULL`,
			after, tenantID).Scan(&afterSeq)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, Refuse(ErrNotFound, "after names no event of this tenant (unknown, or older than the events kept)")
		}
		if err != nil {
			return nil, fmt.Errorf("list events: %w", notFound(err))
		}
	}
	rows, err := db.Query(ctx, eventSelect+`
		WHERE e.tenant_id = $1 AND e.seq > $2
		ORDER BY e.seq LIMIT $3`, tenantID, afterSeq, limit+1)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[eventRow])
	if err != nil {
		return nil, fmt.Errorf("list events: %w", notFound(err))
	}
	out := make([]EventPayload, len(list))
	for i, r := range list {
		out[i] = r.payload(includeBodies)
	}
	return out, nil
}

// EventsKept is how long events are kept for GET /events (their delivery
// retries end after 24 h).
const EventsKept = 7 * 24 * time.Hour

// PruneEvents deletes up to limit events older than EventsKept that are
// relayed, and returns how many.
func PruneEvents(ctx context.Context, db DBTX, limit int) (int64, error) {
	tag, err := db.Exec(ctx, `
		DELETE FROM events WHERE id IN (
			SELECT id FROM events WHERE created_at < now() - make_interval(secs => $1) AND seq IS NOT NULL
			ORDER BY created_at LIMIT $2)`,
		EventsKept.Seconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	return tag.RowsAffected(), nil
}
