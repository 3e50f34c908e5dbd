package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoCredits is returned when a tenant cannot pay for a reply.
var ErrNoCredits = errors.New("no credits")

// TurnState is everything a conversation turn checks before it answers:
// whether it is still the newest turn, still the bot's to answer, the
// contact still opted in, the tenant able to pay, and the memory summary.
type TurnState struct {
	ConversationID       int64  `db:"id"`
	Status               string `db:"status"`
	LastInboundMessageID *int64 `db:"last_inbound_message_id"`
	// QuietSeconds is how long ago the last inbound message arrived, by the
	// database's clock (so app and database clocks need not agree).
	QuietSeconds     float64 `db:"quiet_seconds"`
	OptedOut         bool    `db:"opted_out"`
	Credits          int64   `db:"credits"`
	ReplyPrice       int     `db:"reply_price"`
	Summary          string  `db:"summary"`
	SummaryThroughID int64   `db:"summary_through_id"`
	ChannelKind      string  `db:"channel_kind"`
}

// QuietFor is QuietSeconds as a duration.
func (s TurnState) QuietFor() time.Duration {
	return time.Duration(s.QuietSeconds * float64(time.Second))
}

const turnStateSelect = `
	SELECT v.id, v.status, v.last_inbound_message_id,
	       COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - v.last_inbound_at), 1e9)::float8 AS quiet_seconds,
	       c.opted_out, t.credits, t.reply_price, v.summary, v.summary_through_id, ch.kind AS channel_kind
	FROM conversations v
	JOIN contacts c ON c.id = v.contact_id
	JOIN tenants t ON t.id = v.tenant_id
	JOIN channels ch ON ch.id = v.channel_id
	WHERE v.id = $1 AND v.tenant_id = $2`

// GetTurnState reads a conversation's turn state in one query.
func GetTurnState(ctx context.Context, db DBTX, tenantID string, conversationID int64) (TurnState, error) {
	return turnState(ctx, db, turnStateSelect, tenantID, conversationID)
}

// LockTurnState reads the turn state and locks the conversation row until
// the transaction ends, so no inbound message or handoff slips in between a
// turn's last check and its commit.
func LockTurnState(ctx context.Context, tx DBTX, tenantID string, conversationID int64) (TurnState, error) {
	return turnState(ctx, tx, turnStateSelect+` FOR UPDATE OF v`, tenantID, conversationID)
}

func turnState(ctx context.Context, db DBTX, sql, tenantID string, conversationID int64) (TurnState, error) {
	rows, err := db.Query(ctx, sql, conversationID, tenantID)
	if err != nil {
		return TurnState{}, fmt.Errorf("turn state: %w", err)
	}
	s, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[TurnState])
	if err != nil {
		return TurnState{}, notFound(err)
	}
	return s, nil
}

// DebitReply charges a tenant amount credits for the reply messageID: one
// 'reply' ledger row (unique per message) and the balance, which never goes
// below zero. It returns the new balance, or ErrNoCredits.
func DebitReply(ctx context.Context, db DBTX, tenantID string, messageID int64, amount int) (int64, error) {
	var balance int64
	err := db.QueryRow(ctx, `
		WITH t AS (
			UPDATE tenants SET credits = credits - $3 WHERE id = $1 AND credits >= $3 RETURNING credits
		), l AS (
			INSERT INTO credit_ledger (tenant_id, amount, reason, message_id)
			SELECT $1, -$3::bigint, 'reply', $2 FROM t
		)
		SELECT credits FROM t`, tenantID, messageID, amount).Scan(&balance)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNoCredits
	}
	if err != nil {
		return 0, fmt.Errorf("debit reply: %w", err)
	}
	return balance, nil
}

// SetSummary advances a conversation's running summary to cover the turns
// through throughID. It never moves the summary backwards.
func SetSummary(ctx context.Context, db DBTX, tenantID string, conversationID int64, summary string, throughID int64) error {
	_, err := db.Exec(ctx, `
		UPDATE conversations SET summary = $3, summary_through_id = $4, updated_at = now()
		WHERE id = $1 AND tenant_id = $2 AND summary_through_id < $4`,
		conversationID, tenantID, summary, throughID)
	if err != nil {
		return fmt.Errorf("set summary: %w", err)
	}
	return nil
}
