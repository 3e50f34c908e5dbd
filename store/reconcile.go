package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReasonNoFinalStatus is the error_reason of a reply that Twilio accepted
// but that reached no final status within ReconcileGiveUp, at Twilio
// either, or that Twilio can no longer tell about (deleted there).
const ReasonNoFinalStatus = "no_final_status"

// ReconcileGiveUp is how long after acceptance a reply may go without a
// final status before reconciliation gives up on it.
const ReconcileGiveUp = 48 * time.Hour

// ErrorCodeUnsubscribed is Twilio's error 21610: the recipient sent STOP.
// A status report with it opts the contact out.
const ErrorCodeUnsubscribed = 21610

// OptsOut reports whether a status report's error code opts the contact out.
func OptsOut(errorCode string) bool {
	return errorCode == strconv.Itoa(ErrorCodeUnsubscribed)
}

// IsFinalStatus reports whether a status ends a message's story: delivered
// or read (the customer got it), or a terminal failure (MessageStatus.Final).
func IsFinalStatus(status string) bool { return MessageStatus(status).Final() }

// unfinishedSQL selects accepted replies that have no final status and were
// not given up: messages.in_flight, the column the database computes for it
// and the predicate of messages_unfinished_idx (migration 0011), so the
// planner uses that index. TestUnfinishedMatchesFinal checks it against
// IsFinalStatus for every status.
const unfinishedSQL = `m.in_flight`

// ReconcileCandidate is a reply due for a look-up at Twilio, with the
// account credentials to look it up with.
type ReconcileCandidate struct {
	MessageID       int64     `db:"id"`
	TenantID        string    `db:"tenant_id"`
	ContactID       int64     `db:"contact_id"`
	TwilioSID       string    `db:"twilio_sid"`
	Status          string    `db:"status"`
	AcceptedAt      time.Time `db:"accepted_at"`
	Checks          int       `db:"checks"`
	AccountSID      string    `db:"account_sid"`
	AuthTokenSealed []byte    `db:"auth_token_enc"`
}

// ReconcileCandidates returns at most limit accepted replies without a
// final status whose acceptance is more than after ago and whose next
// look-up is due, oldest acceptance first.
func ReconcileCandidates(ctx context.Context, db DBTX, after time.Duration, limit int) ([]ReconcileCandidate, error) {
	rows, err := db.Query(ctx, `
		SELECT m.id, m.tenant_id, cv.contact_id, m.twilio_sid, m.status, m.accepted_at,
		       COALESCE(r.checks, 0) AS checks, a.account_sid, a.auth_token_enc
		FROM messages m
		JOIN conversations cv ON cv.id = m.conversation_id
		JOIN channels ch ON ch.id = cv.channel_id
		JOIN twilio_accounts a ON a.id = ch.account_id
		LEFT JOIN reconcile_checks r ON r.message_id = m.id
		WHERE `+unfinishedSQL+`
		  AND m.accepted_at < now() - $1::float8 * interval '1 second'
		  AND (r.next_check_at IS NULL OR r.next_check_at <= now())
		ORDER BY m.accepted_at, m.id
		LIMIT $2`, after.Seconds(), limit)
	if err != nil {
		return nil, fmt.Errorf("reconcile candidates: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[ReconcileCandidate])
	if err != nil {
		return nil, fmt.Errorf("reconcile candidates: %w", err)
	}
	return list, nil
}

// UnfinishedReplies counts accepted replies without a final status that
// were not given up (what reconciliation still has to settle).
func UnfinishedReplies(ctx context.Context, db DBTX, scope Scope) (int, error) {
	var n int
	var args []any
	err := db.QueryRow(ctx, `SELECT count(*) FROM messages m WHERE `+unfinishedSQL+` AND `+scope.filter("m.tenant_id", &args), args...).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("unfinished replies: %w", err)
	}
	return n, nil
}

// ReconcileReport is what one look-up at Twilio found for a candidate.
type ReconcileReport struct {
	Candidate ReconcileCandidate
	// Status and ErrorCode are Twilio's answer ("" when the look-up failed).
	Status    string
	ErrorCode string
	// Class names the look-up's outcome: "found", or why it failed
	// ("not_found", "unauthorized", "rate_limited", "unavailable").
	Class string
	// HTTPStatus is Twilio's HTTP status for a failed look-up (0 if none).
	HTTPStatus int
	// NextCheck is when to look again, if the message is still unfinished.
	NextCheck time.Time
	// GiveUp marks the message ReasonNoFinalStatus instead.
	GiveUp bool
}

// ReconcileResult is what RecordReconcile did.
type ReconcileResult struct {
	// Applied is true when the status moved.
	Applied bool
	// Final is true when the message now has a final status.
	Final bool
	// GaveUp is true when the message was marked ReasonNoFinalStatus.
	GaveUp bool
}

// RecordReconcile records one look-up in one transaction (db must be one).
// A status Twilio gave goes through the status callbacks' path: the
// (MessageSid, MessageStatus) dedupe, ApplyStatus (monotonic, refunds on
// failure, a status.reconciled trace event) and the opt-out on 21610. A
// failed look-up is a status.reconciled event with its class. The message's
// next look-up is scheduled, or, once it is final, forgotten.
func RecordReconcile(ctx context.Context, db DBTX, r ReconcileReport) (ReconcileResult, error) {
	c := r.Candidate
	var res ReconcileResult
	if r.Class == ReconcileFound {
		fresh, err := RecordStatusCallback(ctx, db, c.TwilioSID, r.Status)
		if err != nil {
			return res, err
		}
		if fresh {
			res.Applied, err = ApplyStatus(ctx, db, StatusUpdate{
				TenantID: c.TenantID, MessageID: c.MessageID, MessageSID: c.TwilioSID,
				Status: MessageStatus(r.Status), ErrorCode: r.ErrorCode, Via: ViaReconcile,
			})
			if err != nil {
				return res, err
			}
			if OptsOut(r.ErrorCode) {
				if err := SetContactOptOut(ctx, db, c.TenantID, c.ContactID, true); err != nil {
					return res, err
				}
			}
		} else if err := AddEvent(ctx, db, c.TenantID, c.MessageID, "status."+ViaReconcile, map[string]any{
			"message_sid": c.TwilioSID, "status": r.Status, "error_code": r.ErrorCode, "applied": false, "already_reported": true,
		}); err != nil {
			return res, err
		}
	} else if err := AddEvent(ctx, db, c.TenantID, c.MessageID, "status."+ViaReconcile, map[string]any{
		"message_sid": c.TwilioSID, "class": r.Class, "http_status": r.HTTPStatus, "checks": c.Checks + 1,
	}); err != nil {
		return res, err
	}

	var status string
	var reason *string
	if err := db.QueryRow(ctx, `SELECT status, error_reason FROM messages WHERE id = $1 FOR UPDATE`, c.MessageID).
		Scan(&status, &reason); err != nil {
		return res, fmt.Errorf("record reconcile: %w", notFound(err))
	}
	res.Final = IsFinalStatus(status)
	if res.Final || reason != nil {
		_, err := db.Exec(ctx, `DELETE FROM reconcile_checks WHERE message_id = $1`, c.MessageID)
		if err != nil {
			return res, fmt.Errorf("record reconcile: %w", err)
		}
		return res, nil
	}
	if r.GiveUp {
		if _, err := db.Exec(ctx, `
			UPDATE messages SET error_reason = $2, updated_at = now() WHERE id = $1`, c.MessageID, ReasonNoFinalStatus); err != nil {
			return res, fmt.Errorf("record reconcile: give up: %w", err)
		}
		if _, err := db.Exec(ctx, `DELETE FROM reconcile_checks WHERE message_id = $1`, c.MessageID); err != nil {
			return res, fmt.Errorf("record reconcile: %w", err)
		}
		res.GaveUp = true
		return res, AddEvent(ctx, db, c.TenantID, c.MessageID, "status."+ViaReconcile, map[string]any{
			"message_sid": c.TwilioSID, "outcome": "gave_up", "reason": ReasonNoFinalStatus, "last_class": r.Class,
			"status": status, "checks": c.Checks + 1, "accepted_at": c.AcceptedAt,
		})
	}
	lastStatus := &r.Status
	if r.Status == "" {
		lastStatus = nil
	}
	_, err := db.Exec(ctx, `
		INSERT INTO reconcile_checks (message_id, checks, last_class, last_status, checked_at, next_check_at)
		VALUES ($1, 1, $2, $3, now(), $4)
		ON CONFLICT (message_id) DO UPDATE SET checks = reconcile_checks.checks + 1, last_class = EXCLUDED.last_class,
			last_status = EXCLUDED.last_status, checked_at = EXCLUDED.checked_at, next_check_at = EXCLUDED.next_check_at`,
		c.MessageID, r.Class, lastStatus, r.NextCheck)
	if err != nil {
		return res, fmt.Errorf("record reconcile: schedule: %w", err)
	}
	return res, nil
}

// ReconcileFound is ReconcileReport.Class for a look-up that answered.
const ReconcileFound = "found"
