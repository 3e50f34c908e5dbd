package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Erasure and retention (README, "Erasure and retention"): erasing a
// contact, and erasing message bodies older than a tenant's retention, are
// the same statements. They are all in the erasure list below, in the
// order they run; nowhere else knows where personal data is kept.
//
// Adding a table that keeps personal data (an address, a profile name, a
// body, a transcript, a media URL, a summary) means adding its entry here,
// and nothing else: every entry runs for both erasure and retention, or for
// erasure alone, as its scope says. A table keyed by address, for
// example, takes one scopeContact entry on @addresses.
//
// The event log of the event webhooks (store/events.go) takes none, by
// design: an event holds ids and codes only, and a payload's address and
// body are read from the message when it is delivered or listed, so they are
// gone from every event the moment the entries below erase them. The test
// that dumps the database after an erasure (jobs/erasure_e2e_test.go, with
// an endpoint that takes bodies) is what tells whether an entry is missing.
// A broadcast's recipient rows take none either: they hold the contact's
// id, not its address (store/broadcast.go).
//
// Every statement takes the same named arguments: @tenant (uuid), @messages
// (bigint[]: the messages being erased), and for scopeContact also
// @contact (bigint), @conversations (bigint[]: every conversation of the
// contact) and @addresses (text[]: the addresses the contact had).
//
// Kept on purpose: the rows themselves (ids, directions, statuses, times,
// Twilio SIDs, credits reserved), the credit ledger's anonymous amounts,
// the trace's kinds and their non-personal details (statuses, error codes,
// latencies), and River's jobs, whose args hold ids only (jobs/jobargs).

// eraseScope says when an erasure statement runs.
type eraseScope int

const (
	// scopeMessages statements erase what is kept about messages: they run
	// for a contact's erasure (every message of it) and for retention (the
	// messages older than the tenant's retention).
	scopeMessages eraseScope = iota
	// scopeContact statements erase what is kept about the contact itself:
	// they run for a contact's erasure only.
	scopeContact
)

// eraseStatement is one place personal data is kept, and how it is erased.
type eraseStatement struct {
	// table names the rows counted in the audit record.
	table string
	scope eraseScope
	sql   string
}

// erasure is every place Conversa keeps personal data (see above).
var erasure = []eraseStatement{
	{"messages", scopeMessages, `
		UPDATE messages SET body = '', media = '[]', transcript = NULL,
		       erased_at = COALESCE(erased_at, now()), updated_at = now()
		WHERE tenant_id = @tenant AND id = ANY(@messages)
		  AND (erased_at IS NULL OR body <> '' OR media <> '[]' OR transcript IS NOT NULL)`},
	// Trace events carry no bodies or numbers by policy; these keys are the
	// ones that could (and a handoff's reason is the model's own words).
	{"message_events", scopeMessages, `
		WITH k AS (
			SELECT id, CASE WHEN kind = ANY(@free_text_kinds::text[]) THEN @event_keys::text[] || '{reason}'::text[]
			                ELSE @event_keys::text[] END AS keys
			FROM message_events WHERE tenant_id = @tenant AND message_id = ANY(@messages)
		)
		UPDATE message_events e SET detail = e.detail - k.keys
		FROM k WHERE e.id = k.id AND e.detail ?| k.keys`},
	// A turn's HTTP tool calls: the arguments and answers may quote the
	// customer (migration 0012). The rows stay, so a record still says a
	// call was made.
	{"tool_calls", scopeMessages, `
		UPDATE tool_calls SET arguments = '{}', result = CASE WHEN result IS NULL THEN NULL ELSE '{}' END
		WHERE tenant_id = @tenant AND message_id = ANY(@messages)
		  AND (arguments <> '{}' OR result <> '{}')`},
	// A running summary that folded an erased message in is dropped; the
	// turns after it rebuild one from what is left.
	{"conversation_summaries", scopeMessages, `
		UPDATE conversations c SET summary = '', updated_at = now()
		WHERE c.tenant_id = @tenant AND c.summary <> ''
		  AND EXISTS (SELECT 1 FROM messages m WHERE m.id = ANY(@messages)
		              AND m.conversation_id = c.id AND m.id <= c.summary_through_id)`},
	// Closed: no turn answers it and no person can send to it again; the
	// contact writing again opens a new conversation as a new contact.
	{"conversations", scopeContact, `
		UPDATE conversations SET status = 'closed', summary = '', version = version + 1, updated_at = now()
		WHERE tenant_id = @tenant AND id = ANY(@conversations)`},
	// A person's message sent with an Idempotency-Key: the stored answer holds its body.
	{"idempotency_keys", scopeContact, `
		DELETE FROM idempotency_keys WHERE conversation_id = ANY(@conversations)`},
	{"console_sends", scopeContact, `
		DELETE FROM console_sends WHERE tenant_id = @tenant AND message_id = ANY(@messages)`},
	// The row stays, anonymous, so the conversations and the audit record
	// keep pointing at it; its opt-out goes with the address (on SMS,
	// Twilio's own STOP handling still applies).
	{"contacts", scopeContact, `
		UPDATE contacts SET address = 'erased:' || id, wa_id = NULL, profile_name = NULL,
		       opted_out = false, opted_out_at = NULL, updated_at = now()
		WHERE tenant_id = @tenant AND id = @contact`},
}

// personalEventKeys are trace event detail keys that could hold personal data.
var personalEventKeys = []string{"body", "text", "transcript", "profile_name", "name", "address",
	"contact_address", "from_address", "to_address", "wa_id", "media_url", "url", "caption", "summary"}

// freeTextReasonKinds are the trace event kinds whose "reason" is free text
// (the model's words), not one of Conversa's reason codes.
var freeTextReasonKinds = []string{"turn.handoff"}

// Reasons an unsent outbound message is failed with when it is erased.
const (
	ReasonContactErased    = "contact_erased"
	ReasonRetentionExpired = "retention_expired"
)

// runErasure runs the statements of scope and adds the rows each changed
// to rows.
func runErasure(ctx context.Context, tx DBTX, scope eraseScope, args pgx.NamedArgs, rows map[string]int64) error {
	for _, st := range erasure {
		if st.scope != scope {
			continue
		}
		tag, err := tx.Exec(ctx, st.sql, args)
		if err != nil {
			return fmt.Errorf("erase %s: %w", st.table, err)
		}
		rows[st.table] += tag.RowsAffected()
	}
	return nil
}

// eraseMessages erases the messages (locked by the caller) the same way for
// a contact and for retention: an outbound message not sent yet is failed
// with reason first (and refunded, as every failure is), so its send job
// finds nothing to send; then the scopeMessages statements run.
func eraseMessages(ctx context.Context, tx DBTX, tenantID string, messages []int64, reason string, rows map[string]int64) (pgx.NamedArgs, error) {
	unsent, err := collectIDs(tx.Query(ctx, `
		SELECT id FROM messages
		WHERE tenant_id = $1 AND id = ANY($2) AND direction = 'outbound' AND status IN ('pending', 'claimed')
		ORDER BY id`, tenantID, messages))
	if err != nil {
		return nil, fmt.Errorf("erase messages: %w", err)
	}
	for _, id := range unsent {
		failed, err := MarkFailed(ctx, tx, tenantID, id, "", reason)
		if err != nil {
			return nil, fmt.Errorf("erase messages: %w", err)
		}
		if failed {
			rows["unsent_failed"]++
		}
	}
	args := pgx.NamedArgs{
		"tenant": tenantID, "messages": messages,
		"event_keys": personalEventKeys, "free_text_kinds": freeTextReasonKinds,
	}
	return args, runErasure(ctx, tx, scopeMessages, args, rows)
}

// ErasureAddresses are the contact addresses an erasure request for address
// covers, or false when address is not one. A bare number (+E.164) is the
// person on every channel: the SMS contact and the WhatsApp one
// ("whatsapp:+..."); an address with a channel prefix is that contact only.
func ErasureAddresses(address string) ([]string, bool) {
	if rest, ok := strings.CutPrefix(address, string(ChannelWhatsApp)+":"); ok {
		// WhatsApp senders need not be phone numbers: any token will do.
		if rest == "" || len(rest) > 100 || strings.ContainsFunc(rest, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return nil, false
		}
		return []string{address}, true
	}
	if !E164(address) {
		return nil, false
	}
	return []string{address, string(ChannelWhatsApp) + ":" + address}, true
}

// ErasedContact is what erasing one contact changed.
type ErasedContact struct {
	// ContactID is the contact's internal id (the row stays, anonymous).
	ContactID       int64
	ConversationIDs []int64
	MessageIDs      []int64
	// Rows counts the rows changed per table (and "unsent_failed": the
	// messages that were still to be sent).
	Rows map[string]int64
}

// EraseContacts erases the tenant's contacts with the addresses (see
// ErasureAddresses) inside tx: every statement of the erasure list, then
// their conversations' cached memory in Redis (mem may have no Redis). It
// returns ErrNotFound when the tenant has no such contact, and
// ErrMemoryUnavailable when Redis could not be cleared: roll back then. The
// caller commits, after cancelling the contacts' River jobs and recording
// the audit (RecordErasure) in tx.
//
// Locks are taken contact, conversations, messages, the order ingest and
// the turn take them in: a turn that writes its reply first is erased with
// the rest, one that comes after finds the conversation closed.
func EraseContacts(ctx context.Context, tx DBTX, mem *Memory, tenantID string, addresses []string) ([]ErasedContact, error) {
	contacts, err := collectIDs(tx.Query(ctx, `
		SELECT id FROM contacts WHERE tenant_id = $1 AND address = ANY($2) ORDER BY id FOR UPDATE`,
		tenantID, addresses))
	if err != nil {
		return nil, fmt.Errorf("erase contacts: %w", notFound(err))
	}
	if len(contacts) == 0 {
		return nil, ErrNotFound
	}
	var out []ErasedContact
	var conversations []int64
	for _, contactID := range contacts {
		e, err := eraseContact(ctx, tx, tenantID, contactID)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
		conversations = append(conversations, e.ConversationIDs...)
	}
	if mem != nil {
		if err := mem.Erase(ctx, tenantID, conversations); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// eraseContact erases one locked contact.
func eraseContact(ctx context.Context, tx DBTX, tenantID string, contactID int64) (ErasedContact, error) {
	e := ErasedContact{ContactID: contactID, Rows: map[string]int64{}}
	var err error
	e.ConversationIDs, err = collectIDs(tx.Query(ctx, `
		SELECT id FROM conversations WHERE tenant_id = $1 AND contact_id = $2 ORDER BY id FOR UPDATE`, tenantID, contactID))
	if err != nil {
		return e, fmt.Errorf("erase contact: %w", err)
	}
	e.MessageIDs, err = collectIDs(tx.Query(ctx, `
		SELECT id FROM messages WHERE tenant_id = $1 AND conversation_id = ANY($2) ORDER BY id FOR UPDATE`,
		tenantID, e.ConversationIDs))
	if err != nil {
		return e, fmt.Errorf("erase contact: %w", err)
	}
	var addresses []string
	if err := tx.QueryRow(ctx, `SELECT ARRAY[address] FROM contacts WHERE id = $1`, contactID).Scan(&addresses); err != nil {
		return e, fmt.Errorf("erase contact: %w", err)
	}
	args, err := eraseMessages(ctx, tx, tenantID, e.MessageIDs, ReasonContactErased, e.Rows)
	if err != nil {
		return e, err
	}
	args["contact"], args["conversations"], args["addresses"] = contactID, e.ConversationIDs, addresses
	return e, runErasure(ctx, tx, scopeContact, args, e.Rows)
}

// Erasure kinds and who asked, as the audit record names them.
const (
	ErasureContact   = "contact"
	ErasureRetention = "retention"

	RequestedByAdmin     = "admin"
	RequestedByTenantKey = "tenant_key"
	RequestedByCLI       = "cli"
	RequestedByRetention = "retention"
)

// ErasureRecord is one audit record of an erasure.
type ErasureRecord struct {
	TenantID    string
	Kind        string
	ContactID   *int64
	RequestedBy string
	Rows        map[string]int64
}

// RecordErasure writes the audit record of an erasure, in the erasure's
// transaction, and returns its id. It holds ids and counts, never what was
// erased.
func RecordErasure(ctx context.Context, tx DBTX, r ErasureRecord) (int64, error) {
	var id int64
	err := tx.QueryRow(ctx, `
		INSERT INTO erasures (tenant_id, kind, contact_id, requested_by, rows) VALUES ($1, $2, $3, $4, $5)
		RETURNING id`, r.TenantID, r.Kind, r.ContactID, r.RequestedBy, r.Rows).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("record erasure: %w", err)
	}
	return id, nil
}

// MaxRetentionDays bounds a tenant's retention (100 years; the column's
// CHECK holds the same bound).
const MaxRetentionDays = 36500

// SetRetention sets how many days a tenant's message bodies are kept; nil
// keeps them forever. An unknown tenant is ErrNotFound.
func SetRetention(ctx context.Context, db DBTX, tenantID string, days *int) error {
	tag, err := db.Exec(ctx, `UPDATE tenants SET retention_days = $2 WHERE id = $1`, tenantID, days)
	if err != nil {
		return fmt.Errorf("set retention: %w", notFound(err))
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// Retention is a tenant's retention policy.
type Retention struct {
	TenantID string `db:"id"`
	Days     int    `db:"retention_days"`
}

// Retentions lists the tenants that keep message bodies for a limited time.
func Retentions(ctx context.Context, db DBTX) ([]Retention, error) {
	rows, err := db.Query(ctx, `SELECT id, retention_days FROM tenants WHERE retention_days IS NOT NULL ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("retentions: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[Retention])
	if err != nil {
		return nil, fmt.Errorf("retentions: %w", err)
	}
	return out, nil
}

// RetentionBatch is what one EraseExpiredMessages call erased.
type RetentionBatch struct {
	// Messages is how many messages the batch erased (fewer than the limit:
	// none older is left).
	Messages int
	Rows     map[string]int64
}

// EraseExpiredMessages erases, inside tx, up to limit of the tenant's
// messages older than days, oldest first, exactly as a contact's messages
// are erased (eraseMessages), clears their conversations' cached memory,
// and records the batch in the audit trail. Run it in a loop of short
// transactions until Messages < limit.
//
// It walks the tenant's messages in id order from a mark (maintenance_marks
// "retention:<tenant>") and stops at the first one that is not old enough,
// so a run reads only what it erases, and a second run erases nothing twice.
func EraseExpiredMessages(ctx context.Context, tx DBTX, mem *Memory, tenantID string, days, limit int) (RetentionBatch, error) {
	b := RetentionBatch{Rows: map[string]int64{}}
	mark := "retention:" + tenantID
	var after int64
	err := tx.QueryRow(ctx, `SELECT last_id FROM maintenance_marks WHERE name = $1 FOR UPDATE`, mark).Scan(&after)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return b, fmt.Errorf("erase expired messages: %w", err)
	}
	// The leading run of old messages after the mark.
	rows, err := tx.Query(ctx, `
		WITH next AS (
			SELECT id, conversation_id, created_at < now() - make_interval(days => $3) AS old
			FROM messages WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $4
		)
		SELECT id, conversation_id FROM next
		WHERE id < COALESCE((SELECT min(id) FROM next WHERE NOT old), 9223372036854775807)
		ORDER BY id`, tenantID, after, days, limit)
	if err != nil {
		return b, fmt.Errorf("erase expired messages: %w", err)
	}
	var messages, conversations []int64
	seen := map[int64]bool{}
	var id, conv int64
	_, err = pgx.ForEachRow(rows, []any{&id, &conv}, func() error {
		messages = append(messages, id)
		if !seen[conv] {
			seen[conv] = true
			conversations = append(conversations, conv)
		}
		return nil
	})
	if err != nil {
		return b, fmt.Errorf("erase expired messages: %w", err)
	}
	if len(messages) == 0 {
		return b, nil
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM messages WHERE id = ANY($1) ORDER BY id FOR UPDATE`, messages); err != nil {
		return b, fmt.Errorf("erase expired messages: %w", err)
	}
	if _, err := eraseMessages(ctx, tx, tenantID, messages, ReasonRetentionExpired, b.Rows); err != nil {
		return b, err
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO maintenance_marks (name, last_id) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET last_id = EXCLUDED.last_id`, mark, messages[len(messages)-1]); err != nil {
		return b, fmt.Errorf("erase expired messages: %w", err)
	}
	if b.Rows["messages"] > 0 {
		if _, err := RecordErasure(ctx, tx, ErasureRecord{TenantID: tenantID, Kind: ErasureRetention,
			RequestedBy: RequestedByRetention, Rows: b.Rows}); err != nil {
			return b, err
		}
	}
	if mem != nil {
		if err := mem.Erase(ctx, tenantID, conversations); err != nil {
			return b, err
		}
	}
	b.Messages = len(messages)
	return b, nil
}

// collectIDs reads a one-column bigint result.
func collectIDs(rows pgx.Rows, err error) ([]int64, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}
