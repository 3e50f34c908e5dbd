package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// Delivery is an outbound message with everything the sender needs: the
// contact, the conversation's WhatsApp window and the sending number.
type Delivery struct {
	MessageID        int64         `db:"id"`
	TenantID         string        `db:"tenant_id"`
	ConversationID   int64         `db:"conversation_id"`
	Direction        Direction     `db:"direction"`
	Status           MessageStatus `db:"status"`
	Body             string        `db:"body"`
	TwilioSID        *string       `db:"twilio_sid"`
	SendStartedAt    *time.Time    `db:"send_started_at"`
	CreditsReserved  int           `db:"credits_reserved"`
	ContactID        int64         `db:"contact_id"`
	ContactAddress   string        `db:"contact_address"`
	OptedOut         bool          `db:"opted_out"`
	LastInboundAt    *time.Time    `db:"last_inbound_at"`
	ReplyToCreatedAt *time.Time    `db:"reply_to_created_at"`
	ChannelID        int64         `db:"channel_id"`
	ChannelAddress   string        `db:"channel_address"`
	ChannelKind      ChannelKind   `db:"channel_kind"`
	RatePerSecond    *float64      `db:"rate_per_second"`
	TemplateSID      *string       `db:"template_content_sid"`
	TemplateVars     []byte        `db:"template_variables"`
	// ContentSID and ContentVars are the message's own template (a
	// broadcast's), sent as is, inside WhatsApp's 24 h window or not.
	ContentSID      *string `db:"content_sid"`
	ContentVars     []byte  `db:"content_variables"`
	AccountSID      string  `db:"account_sid"`
	AuthTokenSealed []byte  `db:"auth_token_enc"`
}

// LoadDelivery returns one outbound message of one tenant with its contact
// and sending number.
func LoadDelivery(ctx context.Context, db DBTX, tenantID string, messageID int64) (Delivery, error) {
	rows, err := db.Query(ctx, deliverySelect+` WHERE m.id = $1 AND m.tenant_id = $2`, messageID, tenantID)
	if err != nil {
		return Delivery{}, fmt.Errorf("load delivery: %w", err)
	}
	d, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Delivery])
	if err != nil {
		return Delivery{}, fmt.Errorf("load delivery: %w", notFound(err))
	}
	return d, nil
}

// deliverySelect reads outbound messages m as Deliveries.
const deliverySelect = `
		SELECT m.id, m.tenant_id, m.conversation_id, m.direction, m.status, m.body, m.twilio_sid,
		       m.send_started_at, m.credits_reserved,
		       ct.id AS contact_id, ct.address AS contact_address, ct.opted_out,
		       cv.last_inbound_at, ri.created_at AS reply_to_created_at,
		       ch.id AS channel_id, ch.address AS channel_address, ch.kind AS channel_kind,
		       ch.rate_per_second, ch.template_content_sid, ch.template_variables,
		       b.content_sid, b.content_variables,
		       a.account_sid, a.auth_token_enc
		FROM messages m
		JOIN conversations cv ON cv.id = m.conversation_id
		JOIN contacts ct ON ct.id = cv.contact_id
		JOIN channels ch ON ch.id = cv.channel_id
		JOIN twilio_accounts a ON a.id = ch.account_id
		LEFT JOIN messages ri ON ri.id = m.reply_to_id
		LEFT JOIN broadcasts b ON b.id = m.broadcast_id`

// ClaimSend marks a message claimed, in its own committed transaction
// before Twilio is called, so a later attempt knows an earlier one may have
// reached Twilio. send_started_at keeps the first claim's time (the lower
// bound for a look-up in Twilio's message list). It returns false when the
// message is no longer claimable: Twilio has it, or it ended.
func ClaimSend(ctx context.Context, db DBTX, tenantID string, messageID int64, attempt int) (bool, error) {
	tag, err := db.Exec(ctx, claimSendSQL, messageID, tenantID, attempt)
	if err != nil {
		return false, fmt.Errorf("claim send: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

const claimSendSQL = `
		WITH m AS (
			UPDATE messages SET status = 'claimed', send_started_at = COALESCE(send_started_at, clock_timestamp()),
			       updated_at = now()
			WHERE id = $1 AND tenant_id = $2 AND direction = 'outbound' AND status IN ('pending', 'claimed')
			RETURNING id
		)
		INSERT INTO message_events (tenant_id, message_id, kind, detail)
		SELECT $2, m.id, 'send.attempt', jsonb_build_object('attempt', $3::int) FROM m`

// Unclaim returns a claimed message to pending after an attempt that
// certainly did not reach Twilio (a 429, a refused connection), recording
// why, so the next attempt sends without a look-up.
func Unclaim(ctx context.Context, db DBTX, tenantID string, messageID int64, kind string, detail map[string]any) error {
	_, err := db.Exec(ctx, `
		UPDATE messages SET status = 'pending', updated_at = now()
		WHERE id = $1 AND tenant_id = $2 AND status = 'claimed'`, messageID, tenantID)
	if err != nil {
		return fmt.Errorf("unclaim: %w", err)
	}
	return AddEvent(ctx, db, tenantID, messageID, kind, detail)
}

// MarkSent stores the Twilio SID of an accepted message and moves its status
// forward to Twilio's (never backwards). It returns false when the message
// already had another SID. A SID stored on a different message is
// ErrDuplicate.
//
// The read takes no lock: the UPDATE only applies to the row as it was
// read, and otherwise the read is done again (a lost update here once moved
// a message from "sent" back to "queued"). So a caller may pass a pool (the
// sender does: two statements, the read not even a transaction) as well as
// a transaction.
//
// The first try does without the read: it guesses the message is as the
// sender left it (claimed, no SID), which it nearly always is, and the
// UPDATE checks the guess; only a wrong guess reads.
func MarkSent(ctx context.Context, db DBTX, tenantID string, messageID int64, sid string, status MessageStatus, how string) (bool, error) {
	if wrote, err := writeSent(ctx, db, tenantID, messageID, sid, status, how, StatusClaimed, nil); err != nil || wrote {
		return wrote, err
	}
	for try := 1; ; try++ {
		ok, changed, err := markSent(ctx, db, tenantID, messageID, sid, status, how)
		if !changed {
			return ok, err
		}
		if try == 5 {
			return false, errors.New("mark sent: the message kept changing under the update")
		}
	}
}

// markSent is one try of MarkSent; changed reports that the row changed
// after it was read, so nothing was written.
func markSent(ctx context.Context, db DBTX, tenantID string, messageID int64, sid string, status MessageStatus, how string) (ok, changed bool, err error) {
	var cur MessageStatus
	var curSID *string
	var taken bool
	// Whether another message has the SID is read in the same statement: a
	// unique violation would abort the caller's transaction.
	err = db.QueryRow(ctx, `
		SELECT status, twilio_sid, EXISTS (SELECT 1 FROM messages o WHERE o.twilio_sid = $3 AND o.id <> $1)
		FROM messages WHERE id = $1 AND tenant_id = $2`,
		messageID, tenantID, sid).Scan(&cur, &curSID, &taken)
	if err != nil {
		return false, false, fmt.Errorf("mark sent: %w", notFound(err))
	}
	if curSID != nil && *curSID != sid {
		return false, false, nil
	}
	if curSID == nil && taken {
		return false, false, fmt.Errorf("mark sent: SID on another message: %w", ErrDuplicate)
	}
	wrote, err := writeSent(ctx, db, tenantID, messageID, sid, status, how, cur, curSID)
	return wrote, !wrote && err == nil, err
}

// writeSent stores sid and the status a report of status moves a message
// at cur (with curSID) to, and the send.accepted event when the SID is
// new, if the message is still at cur with curSID and no other message has
// the SID (checked in the statement: a unique violation would abort the
// caller's transaction). It reports whether it wrote.
func writeSent(ctx context.Context, db DBTX, tenantID string, messageID int64, sid string, status MessageStatus, how string, cur MessageStatus, curSID *string) (bool, error) {
	// Twilio's answer moves the status on (a claim becomes Twilio's
	// "queued", say); a failure comes only by callback (ApplyStatus). A
	// message Twilio has is never claimed: a status Conversa does not track
	// leaves it queued.
	next := cur
	if Moves(cur, status) && !status.Failure() {
		next = status
	}
	if next == StatusClaimed {
		next = StatusQueued
	}
	// The "send.accepted" event is written by the same statement, so on a
	// pool it cannot land in the trace after a callback that follows it.
	event, err := json.Marshal(map[string]any{"message_sid": sid, "status": status, "how": how})
	if err != nil {
		return false, fmt.Errorf("mark sent: %w", err)
	}
	tag, err := db.Exec(ctx, `
		WITH m AS (
			UPDATE messages SET twilio_sid = $3, status = $4, updated_at = now()
			WHERE id = $1 AND tenant_id = $2 AND status = $5 AND twilio_sid IS NOT DISTINCT FROM $6
			  AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.twilio_sid = $3 AND o.id <> $1)
			RETURNING id
		), e AS (
			INSERT INTO message_events (tenant_id, message_id, kind, detail)
			SELECT $2, m.id, 'send.accepted', $7 FROM m WHERE $6::text IS NULL
		)
		SELECT id FROM m`,
		messageID, tenantID, sid, next, cur, curSID, event)
	if err != nil {
		if isUniqueViolation(err) {
			return false, fmt.Errorf("mark sent: SID on another message: %w", ErrDuplicate)
		}
		return false, fmt.Errorf("mark sent: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// FailUnsent fails a message Twilio has not got (pending or claimed) with
// reason, as MarkFailed does; a message Twilio has is left to its status
// callbacks and false returned.
func FailUnsent(ctx context.Context, db DBTX, tenantID string, messageID int64, reason string) (bool, error) {
	var cur MessageStatus
	err := db.QueryRow(ctx, `SELECT status FROM messages WHERE id = $1 AND tenant_id = $2 FOR UPDATE`, messageID, tenantID).Scan(&cur)
	if err != nil {
		return false, fmt.Errorf("fail unsent: %w", notFound(err))
	}
	if !cur.Unsent() {
		return false, nil
	}
	return MarkFailed(ctx, db, tenantID, messageID, "", reason)
}

// MarkFailed ends a message as failed with Twilio's error code (empty for
// none) and a reason, and refunds its credits. A message already delivered,
// or already failed, is left as it is; the function then returns false.
func MarkFailed(ctx context.Context, db DBTX, tenantID string, messageID int64, code, reason string) (bool, error) {
	var cur MessageStatus
	err := db.QueryRow(ctx, `SELECT status FROM messages WHERE id = $1 AND tenant_id = $2 FOR UPDATE`,
		messageID, tenantID).Scan(&cur)
	if err != nil {
		return false, fmt.Errorf("mark failed: %w", notFound(err))
	}
	if !cur.CanMove(StatusFailed) {
		return false, nil
	}
	_, err = db.Exec(ctx, `
		UPDATE messages SET status = 'failed', error_code = NULLIF($3, ''), error_reason = $4, updated_at = now()
		WHERE id = $1 AND tenant_id = $2`, messageID, tenantID, code, reason)
	if err != nil {
		return false, fmt.Errorf("mark failed: %w", err)
	}
	if err := AddEvent(ctx, db, tenantID, messageID, "send.failed", map[string]any{"error_code": code, "reason": reason}); err != nil {
		return false, err
	}
	if _, err := Refund(ctx, db, tenantID, messageID); err != nil {
		return false, err
	}
	return true, nil
}

// Refund gives a failed message's reserved credits back to its tenant, once:
// the ledger's unique (message_id, reason) makes a second refund a no-op. It
// returns the amount refunded now (0 when already refunded or nothing was
// reserved).
func Refund(ctx context.Context, db DBTX, tenantID string, messageID int64) (int64, error) {
	var amount int64
	err := db.QueryRow(ctx, `
		WITH r AS (
			INSERT INTO credit_ledger (tenant_id, amount, reason, message_id)
			SELECT tenant_id, credits_reserved, 'refund', id FROM messages
			WHERE id = $1 AND tenant_id = $2 AND credits_reserved > 0
			ON CONFLICT (message_id, reason) WHERE message_id IS NOT NULL DO NOTHING
			RETURNING tenant_id, amount
		), s AS (
			INSERT INTO credit_stripes (tenant_id, stripe, credits)
			SELECT tenant_id, $3, amount FROM r
			ON CONFLICT (tenant_id, stripe) DO UPDATE SET credits = credit_stripes.credits + EXCLUDED.credits
		)
		SELECT amount FROM r`, messageID, tenantID, rand.IntN(creditStripes)).Scan(&amount)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("refund: %w", err)
	}
	if err := AddEvent(ctx, db, tenantID, messageID, "credits.refunded", map[string]any{"amount": amount}); err != nil {
		return 0, err
	}
	return amount, nil
}

// SetContactOptOut marks a contact opted out (true) or back in (false).
func SetContactOptOut(ctx context.Context, db DBTX, tenantID string, contactID int64, optedOut bool) error {
	_, err := db.Exec(ctx, `
		UPDATE contacts SET opted_out = $3, opted_out_at = CASE WHEN $3 THEN now() END, updated_at = now()
		WHERE id = $1 AND tenant_id = $2 AND opted_out <> $3`, contactID, tenantID, optedOut)
	if err != nil {
		return fmt.Errorf("set contact opt-out: %w", err)
	}
	return nil
}

// MessageBySID returns the id of the message that carries a Twilio SID.
func MessageBySID(ctx context.Context, db DBTX, sid string) (int64, error) {
	var id int64
	err := db.QueryRow(ctx, `SELECT id FROM messages WHERE twilio_sid = $1`, sid).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("message by sid: %w", notFound(err))
	}
	return id, nil
}

// UnresolvedSendsBefore counts the replies of a conversation with the same
// body whose send outcome is unknown too (claimed) and that were
// claimed before this one: in a Twilio list look-up they have first claim
// on the older copies, which cannot be told apart by their words.
func UnresolvedSendsBefore(ctx context.Context, db DBTX, tenantID string, conversationID, messageID int64, body string, claimedAt time.Time) (int, error) {
	var n int
	err := db.QueryRow(ctx, `
		SELECT count(*) FROM messages
		WHERE tenant_id = $1 AND conversation_id = $2 AND direction = 'outbound' AND id <> $3
		  AND body = $4 AND status = 'claimed'
		  AND (send_started_at, id) < ($5, $3)`, tenantID, conversationID, messageID, body, claimedAt).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("unresolved sends before: %w", err)
	}
	return n, nil
}

// CallbackTarget is the outbound message a status callback is about, with
// what is needed to check the callback's signature.
type CallbackTarget struct {
	MessageID       int64   `db:"id"`
	TenantID        string  `db:"tenant_id"`
	TwilioSID       *string `db:"twilio_sid"`
	ContactID       int64   `db:"contact_id"`
	ChannelAddress  string  `db:"channel_address"`
	AccountSID      string  `db:"account_sid"`
	AuthTokenSealed []byte  `db:"auth_token_enc"`
}

// CallbackTargetByID finds an outbound message by id (the callback's ?m=),
// or, with id 0, by its Twilio SID. Two statements, not one with a CASE on
// the id: Postgres would plan that one again on every call (bench figure
// 7, -track-planning), as no generic plan fits both look-ups.
func CallbackTargetByID(ctx context.Context, db DBTX, id int64, sid string) (CallbackTarget, error) {
	where, arg := `m.id = $1`, any(id)
	if id <= 0 {
		where, arg = `m.twilio_sid = $1`, sid
	}
	rows, err := db.Query(ctx, `
		SELECT m.id, m.tenant_id, m.twilio_sid, cv.contact_id, ch.address AS channel_address,
		       a.account_sid, a.auth_token_enc
		FROM messages m
		JOIN conversations cv ON cv.id = m.conversation_id
		JOIN channels ch ON ch.id = cv.channel_id
		JOIN twilio_accounts a ON a.id = ch.account_id
		WHERE m.direction = 'outbound' AND `+where, arg)
	if err != nil {
		return CallbackTarget{}, fmt.Errorf("callback target: %w", err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[CallbackTarget])
	if err != nil {
		return CallbackTarget{}, fmt.Errorf("callback target: %w", notFound(err))
	}
	return t, nil
}

// RecordStatusCallback remembers a (MessageSid, MessageStatus) pair and
// reports whether it is new: a redelivered callback returns false.
func RecordStatusCallback(ctx context.Context, db DBTX, sid, status string) (bool, error) {
	fresh, err := RecordStatusCallbacks(ctx, db, []StatusCallbackKey{{SID: sid, Status: status}})
	if err != nil {
		return false, err
	}
	return fresh[0], nil
}

// StatusCallbackKey is one (MessageSid, MessageStatus) pair of a status
// callback: its dedupe key.
type StatusCallbackKey struct {
	SID, Status string
}

// RecordStatusCallbacks is RecordStatusCallback for many pairs in one
// statement (a group commit of callbacks), in the order given, so callers
// that sort the pairs take the keys' locks in that order. It returns, per
// pair, whether it is new; a pair given twice is new the first time only.
func RecordStatusCallbacks(ctx context.Context, db DBTX, keys []StatusCallbackKey) ([]bool, error) {
	sids, statuses := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		sids[i], statuses[i] = k.SID, k.Status
	}
	rows, err := db.Query(ctx, `
		INSERT INTO status_callbacks (message_sid, status)
		SELECT k.sid, k.status FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(sid, status, n) ORDER BY k.n
		ON CONFLICT DO NOTHING
		RETURNING message_sid, status`, sids, statuses)
	if err != nil {
		return nil, fmt.Errorf("record status callbacks: %w", err)
	}
	inserted := map[StatusCallbackKey]bool{}
	var k StatusCallbackKey
	if _, err := pgx.ForEachRow(rows, []any{&k.SID, &k.Status}, func() error {
		inserted[k] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("record status callbacks: %w", err)
	}
	fresh := make([]bool, len(keys))
	for i, k := range keys {
		fresh[i] = inserted[k]
		delete(inserted, k)
	}
	return fresh, nil
}

// StatusUpdate is one status report from Twilio about an outbound message.
type StatusUpdate struct {
	TenantID   string
	MessageID  int64
	MessageSID string
	Status     MessageStatus
	ErrorCode  string
	// Via is how the report came: ViaCallback ("" too) or ViaReconcile.
	// The trace event is "status." + Via.
	Via string
}

// How a status report reached Conversa: Twilio's callback, or a look-up by
// reconciliation.
const (
	ViaCallback  = "callback"
	ViaReconcile = "reconciled"
)

// event is the trace event of a status report, as ApplyStatus and
// QuickApplyStatuses write it: its kind ("status." + how it came) and its
// detail, to which they add the status found ("from") and whether the
// report moved it ("applied").
func (u StatusUpdate) event() (kind string, detail map[string]any) {
	via := u.Via
	if via == "" {
		via = ViaCallback
	}
	return "status." + via, map[string]any{"message_sid": u.MessageSID, "status": u.Status, "error_code": u.ErrorCode}
}

// ApplyStatus applies a Twilio status to a message, monotonically: a late
// "sent" never overwrites "delivered"; failed/undelivered/canceled are
// terminal, record the error code, and refund the reserved credits. It stores
// the SID when the message has none yet (the send's answer was lost). Every
// report is a trace event, applied or not. Run it in a transaction.
func ApplyStatus(ctx context.Context, db DBTX, u StatusUpdate) (bool, error) {
	var cur MessageStatus
	var curSID *string
	err := db.QueryRow(ctx, `SELECT status, twilio_sid FROM messages WHERE id = $1 AND tenant_id = $2 FOR UPDATE`,
		u.MessageID, u.TenantID).Scan(&cur, &curSID)
	if err != nil {
		return false, fmt.Errorf("apply status: %w", notFound(err))
	}
	if curSID != nil && *curSID != u.MessageSID {
		// Not this message's SID: record it (it would be a second copy), change nothing.
		err := AddEvent(ctx, db, u.TenantID, u.MessageID, "status.sid_mismatch",
			map[string]any{"message_sid": u.MessageSID, "status": u.Status})
		return false, err
	}
	if curSID == nil {
		if _, err := MarkSent(ctx, db, u.TenantID, u.MessageID, u.MessageSID, StatusQueued, "status_callback"); errors.Is(err, ErrDuplicate) {
			err := AddEvent(ctx, db, u.TenantID, u.MessageID, "status.sid_mismatch",
				map[string]any{"message_sid": u.MessageSID, "status": u.Status})
			return false, err
		} else if err != nil {
			return false, err
		}
		if err := db.QueryRow(ctx, `SELECT status FROM messages WHERE id = $1`, u.MessageID).Scan(&cur); err != nil {
			return false, fmt.Errorf("apply status: %w", err)
		}
	}
	moves := Moves(cur, u.Status)
	kind, event := u.event()
	event["from"], event["applied"] = cur, moves
	if moves && !u.Status.Failure() {
		// The common case (sent, delivered, read): the move and its event
		// in one statement.
		detail, err := json.Marshal(event)
		if err != nil {
			return false, fmt.Errorf("apply status: %w", err)
		}
		_, err = db.Exec(ctx, `
			WITH m AS (
				UPDATE messages SET status = $3, updated_at = now() WHERE id = $1 AND tenant_id = $2
			)
			INSERT INTO message_events (tenant_id, message_id, kind, detail) VALUES ($2, $1, $4, $5)`,
			u.MessageID, u.TenantID, u.Status, kind, detail)
		if err != nil {
			return false, fmt.Errorf("apply status: %w", err)
		}
		return true, nil
	}
	if err := AddEvent(ctx, db, u.TenantID, u.MessageID, kind, event); err != nil {
		return false, err
	}
	if !moves {
		return false, nil
	}
	// A failure: terminal, with its code and reason, and refunded.
	reason := "twilio_" + string(u.Status)
	_, err = db.Exec(ctx, `
		UPDATE messages SET status = $3, error_code = NULLIF($4, ''), error_reason = $5, updated_at = now()
		WHERE id = $1 AND tenant_id = $2`, u.MessageID, u.TenantID, u.Status.Stores(), u.ErrorCode, reason)
	if err != nil {
		return false, fmt.Errorf("apply status: %w", err)
	}
	if _, err := Refund(ctx, db, u.TenantID, u.MessageID); err != nil {
		return false, err
	}
	return true, nil
}

// QuickStatus is what QuickApplyStatuses did with one report.
type QuickStatus struct {
	// Done: the report was recorded (or found a duplicate) and applied or
	// not. When false nothing of it was written: it needs
	// RecordStatusCallbacks and ApplyStatus, in a transaction.
	Done bool
	// Duplicate: the (MessageSid, MessageStatus) pair was already recorded.
	Duplicate bool
	// Applied: the message's status moved.
	Applied bool
}

// QuickApplyStatuses records and applies the common status reports, one
// statement each, all in one round trip: a report that is not a failure,
// about a message that carries the report's SID, needs only its dedupe row,
// the move (when it moves the message: MovesFrom) and its trace event, the
// same as RecordStatusCallbacks and ApplyStatus would write. Each statement
// locks its message before its dedupe key, so us should be in message-id
// order (one message's reports in their arrival order). Any other report
// (a failure, which refunds; a message without a SID yet, or with another
// one) comes back not Done, with nothing written. On a pool the batch is
// one implicit transaction: all of it commits, or none.
func QuickApplyStatuses(ctx context.Context, db DBTX, us []StatusUpdate) ([]QuickStatus, error) {
	out := make([]QuickStatus, len(us))
	b := &pgx.Batch{}
	for i, u := range us {
		if u.Status.Failure() || !u.Status.TwilioReports() {
			continue
		}
		// The statement adds the status it found ("from") and whether the
		// report moved it ("applied") to the event's detail.
		kind, event := u.event()
		base, err := json.Marshal(event)
		if err != nil {
			return nil, fmt.Errorf("quick apply status: %w", err)
		}
		from := []string{}
		for _, st := range MovesFrom(u.Status) {
			from = append(from, string(st))
		}
		b.Queue(quickApplyStatusSQL, u.MessageID, u.TenantID, u.MessageSID, string(u.Status), from, kind, base).
			QueryRow(func(row pgx.Row) error {
				var fresh bool
				if err := row.Scan(&out[i].Done, &fresh, &out[i].Applied); err != nil {
					return err
				}
				out[i].Duplicate = out[i].Done && !fresh
				return nil
			})
	}
	if b.Len() == 0 {
		return out, nil
	}
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("quick apply status: %w", err)
	}
	return out, nil
}

// quickApplyStatusSQL is one report of QuickApplyStatuses: lock the message
// ($1, tenant $2); only when it carries the report's SID ($3), record the
// pair ($3, $4) and, when the pair is new, move the status to $4 if it is
// one of $5 and write the trace event ($6, detail $7 with from and
// applied). It answers whether it was done, whether the pair was new, and
// whether the status moved.
const quickApplyStatusSQL = `
		WITH cur AS (
			SELECT status, status = ANY ($5::text[]) AS moves FROM messages
			WHERE id = $1 AND tenant_id = $2 AND twilio_sid = $3 FOR UPDATE
		), rec AS (
			INSERT INTO status_callbacks (message_sid, status) SELECT $3, $4 FROM cur
			ON CONFLICT DO NOTHING
			RETURNING 1
		), m AS (
			UPDATE messages SET status = $4, updated_at = now()
			WHERE id = $1 AND tenant_id = $2 AND EXISTS (SELECT FROM rec) AND EXISTS (SELECT FROM cur WHERE moves)
		), e AS (
			INSERT INTO message_events (tenant_id, message_id, kind, detail)
			SELECT $2, $1, $6, $7::jsonb || jsonb_build_object('from', cur.status, 'applied', cur.moves)
			FROM cur WHERE EXISTS (SELECT FROM rec)
		)
		SELECT EXISTS (SELECT FROM cur), EXISTS (SELECT FROM rec),
		       EXISTS (SELECT FROM rec) AND EXISTS (SELECT FROM cur WHERE moves)`

// Default send rates per sender number (docs/delivery.md, "Send"): a US
// long code sends one segment a second; WhatsApp 80 messages a second.
const (
	DefaultSMSRate      = 1.0
	DefaultWhatsAppRate = 80.0
)

// SendRate is a channel's sends per second: its rate_per_second, or its
// kind's default. The send pacer spaces sends by it, and a broadcast
// schedules its sends by it.
func SendRate(kind ChannelKind, ratePerSecond *float64) float64 {
	if ratePerSecond != nil && *ratePerSecond > 0 {
		return *ratePerSecond
	}
	if kind == ChannelWhatsApp {
		return DefaultWhatsAppRate
	}
	return DefaultSMSRate
}

// ReservePace takes the next send slot of a sender number from the Postgres
// pacing bucket (GCRA): slots are interval apart, and a caller may hold a
// slot at most maxWait ahead. It returns how long to wait for the slot taken,
// or, when none is free within maxWait, ok false and how long to come back
// after.
func ReservePace(ctx context.Context, db DBTX, address string, interval, maxWait time.Duration) (wait time.Duration, ok bool, err error) {
	var secs float64
	iv, mw := interval.Seconds(), maxWait.Seconds()
	// statement_timestamp(), not now(): inside a long transaction now() stands still.
	err = db.QueryRow(ctx, `
		INSERT INTO send_pacing AS p (address, tat) VALUES ($1, statement_timestamp() + $2::float8 * interval '1 second')
		ON CONFLICT (address) DO UPDATE SET tat = greatest(p.tat, statement_timestamp()) + $2::float8 * interval '1 second'
		WHERE greatest(p.tat, statement_timestamp()) - statement_timestamp() <= $3::float8 * interval '1 second'
		RETURNING extract(epoch FROM (p.tat - statement_timestamp()))::float8 - $2::float8`,
		address, iv, mw).Scan(&secs)
	if err == nil {
		return max(0, time.Duration(secs*float64(time.Second))), true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, false, fmt.Errorf("reserve pace: %w", err)
	}
	err = db.QueryRow(ctx, `
		SELECT extract(epoch FROM (greatest(tat, statement_timestamp()) - statement_timestamp()))::float8 - $2::float8
		FROM send_pacing WHERE address = $1`, address, mw).Scan(&secs)
	if err != nil {
		return 0, false, fmt.Errorf("reserve pace: %w", err)
	}
	return max(time.Millisecond, time.Duration(secs*float64(time.Second))), false, nil
}
