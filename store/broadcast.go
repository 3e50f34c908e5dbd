package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Broadcasts (README, "Broadcasts"): one message from one of a tenant's
// numbers to many contacts. A broadcast is written in batches, each its own
// transaction (AddBroadcastRecipients), and a recipient is a contact: the
// unique (broadcast, contact) row makes a resumed or repeated batch write
// nothing twice. Each queued recipient gets an ordinary outbound message
// (author human) and its conversa.send job, so pacing, the exactly-once send
// and status tracking are every message's. The broadcast is finished when
// each of its messages is settled (FinishBroadcast).

// Broadcast is one broadcast as stored.
type Broadcast struct {
	ID               int64      `db:"id" json:"id"`
	TenantID         string     `db:"tenant_id" json:"tenant_id"`
	ChannelID        int64      `db:"channel_id" json:"-"`
	ChannelAddress   string     `db:"channel_address" json:"from"`
	ChannelKind      string     `db:"channel_kind" json:"channel_kind"`
	Name             string     `db:"name" json:"name"`
	Body             string     `db:"body" json:"body,omitempty"`
	ContentSID       *string    `db:"content_sid" json:"content_sid,omitempty"`
	ContentVariables []byte     `db:"content_variables" json:"-"`
	Recipients       int        `db:"recipients" json:"recipients"`
	Invalid          int        `db:"invalid" json:"invalid_count"`
	RequestHash      []byte     `db:"request_hash" json:"-"`
	CreatedAt        time.Time  `db:"created_at" json:"created_at"`
	QueuedAt         *time.Time `db:"queued_at" json:"queued_at"`
	FinishedAt       *time.Time `db:"finished_at" json:"finished_at"`
}

const broadcastSelect = `
	SELECT b.id, b.tenant_id, b.channel_id, ch.address AS channel_address, ch.kind AS channel_kind,
	       b.name, b.body, b.content_sid, b.content_variables, b.recipients, b.invalid, b.request_hash,
	       b.created_at, b.queued_at, b.finished_at
	FROM broadcasts b JOIN channels ch ON ch.id = b.channel_id`

// NewBroadcast is a broadcast to create: exactly one of Body and ContentSID.
type NewBroadcast struct {
	TenantID  string
	ChannelID int64
	Name      string
	Body      string
	// ContentSID and ContentVariables (a JSON object, or nil) are the
	// WhatsApp template every recipient gets.
	ContentSID       string
	ContentVariables []byte
	// KeyHash and RequestHash are the Idempotency-Key's (nil for none).
	KeyHash, RequestHash []byte
}

// CreateBroadcast writes a new broadcast, or, for a KeyHash a broadcast
// of the last IdempotencyTTL holds, returns that one with created false:
// the caller compares its RequestHash and resumes it (its recipients are
// unique, so a resumed batch writes nothing twice). An older broadcast's
// key is released first.
func CreateBroadcast(ctx context.Context, db DBTX, nb NewBroadcast) (b Broadcast, created bool, err error) {
	if len(nb.KeyHash) > 0 {
		if _, err := db.Exec(ctx, `
			UPDATE broadcasts SET idempotency_key_hash = NULL
			WHERE idempotency_key_hash = $1 AND created_at <= now() - $2::float8 * interval '1 second'`,
			nb.KeyHash, IdempotencyTTL.Seconds()); err != nil {
			return b, false, fmt.Errorf("create broadcast: %w", err)
		}
	}
	var keyHash, requestHash, vars any
	if len(nb.KeyHash) > 0 {
		keyHash, requestHash = nb.KeyHash, nb.RequestHash
	}
	if len(nb.ContentVariables) > 0 {
		vars = nb.ContentVariables
	}
	var id int64
	err = db.QueryRow(ctx, `
		INSERT INTO broadcasts (tenant_id, channel_id, name, body, content_sid, content_variables, idempotency_key_hash, request_hash)
		SELECT $1, ch.id, $3, $4, NULLIF($5, ''), $6, $7, $8 FROM channels ch WHERE ch.id = $2 AND ch.tenant_id = $1
		ON CONFLICT (idempotency_key_hash) DO NOTHING
		RETURNING id`, nb.TenantID, nb.ChannelID, nb.Name, nb.Body, nb.ContentSID, vars, keyHash, requestHash).Scan(&id)
	created = err == nil
	if errors.Is(err, pgx.ErrNoRows) && keyHash != nil {
		// The key's broadcast: the insert waited for its transaction.
		err = db.QueryRow(ctx, `SELECT id FROM broadcasts WHERE idempotency_key_hash = $1`, keyHash).Scan(&id)
	}
	if err != nil {
		return b, false, fmt.Errorf("create broadcast: %w", notFound(err))
	}
	b, err = GetBroadcast(ctx, db, AllTenants(), id)
	return b, created, err
}

// GetBroadcast returns one broadcast in scope.
func GetBroadcast(ctx context.Context, db DBTX, scope Scope, id int64) (Broadcast, error) {
	args := []any{id}
	where := scope.filter("b.tenant_id", &args)
	rows, err := db.Query(ctx, broadcastSelect+` WHERE b.id = $1 AND `+where, args...)
	if err != nil {
		return Broadcast{}, fmt.Errorf("get broadcast: %w", err)
	}
	b, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Broadcast])
	if err != nil {
		return Broadcast{}, notFound(err)
	}
	return b, nil
}

// RecipientBatch is what one AddBroadcastRecipients call wrote.
type RecipientBatch struct {
	// MessageIDs are the new outbound messages, pending: the caller inserts
	// their conversa.send jobs in the same transaction.
	MessageIDs []int64
	// OptedOut counts the new recipients skipped because they opted out.
	OptedOut int
}

// AddBroadcastRecipients writes one batch of a broadcast's recipients
// inside tx: addresses are channel addresses of the broadcast's channel
// kind ("whatsapp:+..." or "+..."), already checked. Each address's contact
// is found or created, and its open conversation on the broadcast's number
// found or opened, in the order ingest takes the same locks (contact, then
// conversation). A contact already a recipient of the broadcast is left
// alone; a new one that opted out is recorded as skipped; every other new
// one gets a pending outbound message with the broadcast's body and a
// message.created trace event.
func AddBroadcastRecipients(ctx context.Context, tx DBTX, b Broadcast, addresses []string) (RecipientBatch, error) {
	var out RecipientBatch
	if len(addresses) == 0 {
		return out, nil
	}
	// Separate statements: each sees the rows the one before wrote, and
	// the rows a concurrent ingest committed meanwhile (one statement's
	// ON CONFLICT DO NOTHING would skip those without seeing them).
	if _, err := tx.Exec(ctx, `
		INSERT INTO contacts (tenant_id, address)
		SELECT $1, a FROM unnest($2::text[]) AS a ORDER BY a
		ON CONFLICT (tenant_id, address) DO NOTHING`, b.TenantID, addresses); err != nil {
		return out, fmt.Errorf("add broadcast recipients: contacts: %w", err)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO conversations (tenant_id, channel_id, contact_id)
		SELECT $1, $2, ct.id FROM contacts ct
		WHERE ct.tenant_id = $1 AND ct.address = ANY($3)
		  AND NOT EXISTS (SELECT 1 FROM conversations cv WHERE cv.channel_id = $2 AND cv.contact_id = ct.id AND cv.status <> 'closed')
		ORDER BY ct.id
		ON CONFLICT (channel_id, contact_id) WHERE status <> 'closed' DO NOTHING`, b.TenantID, b.ChannelID, addresses); err != nil {
		return out, fmt.Errorf("add broadcast recipients: conversations: %w", err)
	}
	event, err := json.Marshal(map[string]any{"author": AuthorHuman, "via": "broadcast", "broadcast_id": b.ID})
	if err != nil {
		return out, fmt.Errorf("add broadcast recipients: %w", err)
	}
	err = tx.QueryRow(ctx, `
		WITH r AS (
			INSERT INTO broadcast_recipients (broadcast_id, contact_id, opted_out)
			SELECT $3, ct.id, ct.opted_out FROM contacts ct
			WHERE ct.tenant_id = $1 AND ct.address = ANY($4)
			ORDER BY ct.id
			ON CONFLICT (broadcast_id, contact_id) DO NOTHING
			RETURNING contact_id, opted_out
		), m AS (
			INSERT INTO messages (tenant_id, conversation_id, direction, author, body, status, broadcast_id)
			SELECT $1, cv.id, 'outbound', 'human', $5, 'pending', $3
			FROM r JOIN conversations cv ON cv.channel_id = $2 AND cv.contact_id = r.contact_id AND cv.status <> 'closed'
			WHERE NOT r.opted_out
			ORDER BY cv.id
			RETURNING id
		), e AS (
			INSERT INTO message_events (tenant_id, message_id, kind, detail)
			SELECT $1, m.id, 'message.created', $6 FROM m
		)
		SELECT COALESCE((SELECT array_agg(id ORDER BY id) FROM m), '{}'), (SELECT count(*) FROM r WHERE r.opted_out)`,
		b.TenantID, b.ChannelID, b.ID, addresses, BroadcastMessageBody(b), event).Scan(&out.MessageIDs, &out.OptedOut)
	if err != nil {
		return out, fmt.Errorf("add broadcast recipients: %w", err)
	}
	return out, nil
}

// BroadcastMessageBody is the body stored on a broadcast's messages: the
// SMS body, or for a template "[template HX...]". Twilio renders a
// template with its variables, which may be personal; the stored body
// names the template only (README, "Broadcasts").
func BroadcastMessageBody(b Broadcast) string {
	if b.ContentSID != nil {
		return "[template " + *b.ContentSID + "]"
	}
	return b.Body
}

// BroadcastTally is a broadcast's numbers: what its creation queued and
// skipped, and its messages' statuses.
type BroadcastTally struct {
	Queued          int                   `json:"queued"`
	SkippedOptedOut int                   `json:"skipped_opted_out"`
	Counts          map[MessageStatus]int `json:"counts"`
	// Settled counts the messages that are done: a final status, or given
	// up by reconciliation (no_final_status).
	Settled int `json:"settled"`
}

// settledSQL is true for a message of m whose delivery is over: a final
// status (MessageStatus.Final, given as @final), or a reason without one,
// which only reconciliation's give-up (ReasonNoFinalStatus) leaves.
const settledSQL = `(m.status = ANY(@final::text[]) OR m.error_reason IS NOT NULL)`

// finalStatuses is every stored status that is Final.
func finalStatuses() []string {
	var out []string
	for _, s := range AllStatuses() {
		if s.Final() {
			out = append(out, string(s))
		}
	}
	return out
}

// TallyBroadcast counts a broadcast's recipients and messages by status.
func TallyBroadcast(ctx context.Context, db DBTX, broadcastID int64) (BroadcastTally, error) {
	t := BroadcastTally{Counts: map[MessageStatus]int{}}
	rows, err := db.Query(ctx, `
		SELECT m.status, count(*), count(*) FILTER (WHERE `+settledSQL+`)
		FROM messages m WHERE m.broadcast_id = @broadcast GROUP BY m.status`,
		pgx.NamedArgs{"broadcast": broadcastID, "final": finalStatuses()})
	if err != nil {
		return t, fmt.Errorf("tally broadcast: %w", err)
	}
	var status MessageStatus
	var n, settled int
	if _, err := pgx.ForEachRow(rows, []any{&status, &n, &settled}, func() error {
		t.Counts[status] = n
		t.Queued += n
		t.Settled += settled
		return nil
	}); err != nil {
		return t, fmt.Errorf("tally broadcast: %w", err)
	}
	if err := db.QueryRow(ctx, `SELECT count(*) FROM broadcast_recipients WHERE broadcast_id = $1 AND opted_out`,
		broadcastID).Scan(&t.SkippedOptedOut); err != nil {
		return t, fmt.Errorf("tally broadcast: %w", err)
	}
	return t, nil
}

// MarkBroadcastQueued records that every batch of the broadcast has
// committed: how many distinct addresses it was given and how many of them
// were invalid. Recipients are the contacts written plus the invalid ones.
// A second call (a resumed creation) keeps the first queued_at.
func MarkBroadcastQueued(ctx context.Context, db DBTX, id int64, invalid int) (Broadcast, error) {
	tag, err := db.Exec(ctx, `
		UPDATE broadcasts SET queued_at = COALESCE(queued_at, now()), invalid = $2::int,
		       recipients = $2::int + (SELECT count(*) FROM broadcast_recipients WHERE broadcast_id = $1)
		WHERE id = $1`, id, invalid)
	if err != nil {
		return Broadcast{}, fmt.Errorf("mark broadcast queued: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return Broadcast{}, ErrNotFound
	}
	return GetBroadcast(ctx, db, AllTenants(), id)
}

// UnsettledBroadcastMessages counts the tenant's broadcast's messages whose
// delivery is not over yet. An unknown broadcast is ErrNotFound.
func UnsettledBroadcastMessages(ctx context.Context, db DBTX, tenantID string, id int64) (int, error) {
	var n *int
	err := db.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM messages m WHERE m.broadcast_id = b.id AND NOT `+settledSQL+`)
		FROM broadcasts b WHERE b.id = @broadcast AND b.tenant_id = @tenant`,
		pgx.NamedArgs{"broadcast": id, "tenant": tenantID, "final": finalStatuses()}).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("unsettled broadcast messages: %w", notFound(err))
	}
	return *n, nil
}

// FinishBroadcast sets the broadcast's finished_at, once, if it is queued
// and every one of its messages is settled, and reports whether this call
// did. Run it in the transaction that records the broadcast.finished event.
func FinishBroadcast(ctx context.Context, tx DBTX, tenantID string, id int64) (bool, error) {
	tag, err := tx.Exec(ctx, `
		UPDATE broadcasts b SET finished_at = now()
		WHERE b.id = @broadcast AND b.tenant_id = @tenant AND b.queued_at IS NOT NULL AND b.finished_at IS NULL
		  AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.broadcast_id = b.id AND NOT `+settledSQL+`)`,
		pgx.NamedArgs{"broadcast": id, "tenant": tenantID, "final": finalStatuses()})
	if err != nil {
		return false, fmt.Errorf("finish broadcast: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// TenantChannelByAddress returns the tenant's channel with address; a
// number that is not the tenant's is ErrNotFound.
func TenantChannelByAddress(ctx context.Context, db DBTX, tenantID, address string) (Channel, error) {
	rows, err := db.Query(ctx, channelSelect+` WHERE c.address = $1 AND c.tenant_id = $2`, address, tenantID)
	if err != nil {
		return Channel{}, fmt.Errorf("tenant channel: %w", err)
	}
	ch, err := collectChannel(rows)
	if err != nil {
		return Channel{}, err
	}
	return ch, nil
}
