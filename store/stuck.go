package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// TurnOutcomeKinds are the trace events that explain why an inbound message
// has no reply: the turn skipped it (superseded, handed off, opted out,
// nothing to answer), the tenant had no credits, the turn gave up or was a
// duplicate, or it was already reported stuck.
var TurnOutcomeKinds = []string{"turn.skipped", "turn.no_credits", "turn.failed", "turn.duplicate", "turn.gave_up", EventTurnStuck}

// EventTurnStuck is the trace event of an inbound message found without a
// reply or a reason StuckAfter after it arrived.
const EventTurnStuck = "turn.stuck"

// StuckAfter is how long after arriving an inbound message must have a
// reply or a recorded reason for having none.
const StuckAfter = 5 * time.Minute

// stuckMark names the stuck-turn scan's row in maintenance_marks.
const stuckMark = "stuck_turns"

// StuckTurn is an inbound message found stuck, with what its turn job
// showed (job fields are nil when the job is gone).
type StuckTurn struct {
	MessageID      int64   `db:"id" json:"-"`
	TenantID       string  `db:"tenant_id" json:"-"`
	ConversationID int64   `db:"conversation_id" json:"conversation_id"`
	AgeSeconds     float64 `db:"age_seconds" json:"age_seconds"`
	JobID          *int64  `db:"job_id" json:"job_id"`
	JobState       *string `db:"job_state" json:"job_state"`
	Attempt        *int    `db:"attempt" json:"attempt"`
	MaxAttempts    *int    `db:"max_attempts" json:"max_attempts"`
	LastError      *string `db:"last_error" json:"last_error"`
}

// FindStuckTurns checks, once each, the inbound messages that arrived more
// than after ago since the last scan (at most limit messages of any kind
// a call), in one transaction (db must be one): those with a turn job but
// neither a reply nor a TurnOutcomeKinds event get a turn.stuck event with
// their job's state, attempts and last error. A message that has no turn
// job was not to be answered (it came during a handoff, from an opted-out
// contact, or was STOP/START: the webhook commits the job with the message
// or decides there is none). more reports that the scan stopped at limit.
func FindStuckTurns(ctx context.Context, db DBTX, after time.Duration, limit int) (stuck []StuckTurn, more bool, err error) {
	var mark int64
	// FOR UPDATE: two runs never scan the same range.
	if err := db.QueryRow(ctx, `SELECT last_id FROM maintenance_marks WHERE name = $1 FOR UPDATE`, stuckMark).Scan(&mark); err != nil {
		return nil, false, fmt.Errorf("find stuck turns: %w", err)
	}
	// Ids follow arrival closely but not exactly (concurrent transactions):
	// the scan stops at the first message not yet old enough, so none is
	// passed over before its time.
	type row struct {
		ID      int64 `db:"id"`
		Inbound bool  `db:"inbound"`
		Old     bool  `db:"old"`
	}
	rows, err := db.Query(ctx, `
		SELECT id, direction = 'inbound' AS inbound, created_at < now() - $2::float8 * interval '1 second' AS old
		FROM messages WHERE id > $1 ORDER BY id LIMIT $3`, mark, after.Seconds(), limit)
	if err != nil {
		return nil, false, fmt.Errorf("find stuck turns: %w", err)
	}
	scanned, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
	if err != nil {
		return nil, false, fmt.Errorf("find stuck turns: %w", err)
	}
	var inbound []int64
	last := mark
	for _, r := range scanned {
		if !r.Old {
			break
		}
		last = r.ID
		if r.Inbound {
			inbound = append(inbound, r.ID)
		}
	}
	more = len(scanned) == limit && last == scanned[len(scanned)-1].ID
	if last == mark {
		return nil, false, nil
	}
	if len(inbound) > 0 {
		rows, err = db.Query(ctx, `
			SELECT m.id, m.tenant_id, m.conversation_id,
			       extract(epoch FROM now() - m.created_at)::float8 AS age_seconds,
			       j.id AS job_id, j.state AS job_state, j.attempt, j.max_attempts, j.last_error
			FROM messages m
			JOIN LATERAL (
				SELECT id, state::text AS state, attempt, max_attempts,
				       left(errors[array_upper(errors, 1)]->>'error', 200) AS last_error
				FROM river_job
				WHERE kind = 'conversa.reply' AND args @> jsonb_build_object('message_id', m.id)
				ORDER BY id DESC LIMIT 1
			) j ON true
			WHERE m.id = ANY($1)
			  AND NOT EXISTS (SELECT 1 FROM messages r WHERE r.reply_to_id = m.id)
			  AND NOT EXISTS (SELECT 1 FROM message_events e WHERE e.message_id = m.id AND e.kind = ANY($2))
			ORDER BY m.id`, inbound, TurnOutcomeKinds)
		if err != nil {
			return nil, false, fmt.Errorf("find stuck turns: %w", err)
		}
		stuck, err = pgx.CollectRows(rows, pgx.RowToStructByName[StuckTurn])
		if err != nil {
			return nil, false, fmt.Errorf("find stuck turns: %w", err)
		}
	}
	for _, s := range stuck {
		detail, err := json.Marshal(s)
		if err != nil {
			return nil, false, fmt.Errorf("find stuck turns: %w", err)
		}
		if err := AddEvent(ctx, db, s.TenantID, s.MessageID, EventTurnStuck, json.RawMessage(detail)); err != nil {
			return nil, false, err
		}
	}
	if _, err := db.Exec(ctx, `UPDATE maintenance_marks SET last_id = $2 WHERE name = $1`, stuckMark, last); err != nil {
		return nil, false, fmt.Errorf("find stuck turns: %w", err)
	}
	return stuck, more, nil
}
