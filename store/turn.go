package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoCredits is returned when a tenant cannot pay for a reply.
var ErrNoCredits = errors.New("no credits")

// TurnState is everything a conversation turn checks before it answers:
// whether it is still the newest turn, still the bot's to answer, the
// contact still opted in, the tenant able to pay, and the memory summary.
type TurnState struct {
	ConversationID       int64              `db:"id"`
	Status               ConversationStatus `db:"status"`
	LastInboundMessageID *int64             `db:"last_inbound_message_id"`
	// QuietSeconds is how long ago the last inbound message arrived, by the
	// database's clock (so app and database clocks need not agree).
	QuietSeconds     float64     `db:"quiet_seconds"`
	OptedOut         bool        `db:"opted_out"`
	Credits          int64       `db:"credits"`
	ReplyPrice       int         `db:"reply_price"`
	Summary          string      `db:"summary"`
	SummaryThroughID int64       `db:"summary_through_id"`
	ChannelKind      ChannelKind `db:"channel_kind"`
	// CurrentAgent is the agent of the bot's last reply ("" for none).
	CurrentAgent string `db:"current_agent"`
	// HasKnowledge is whether the tenant has any knowledge document: a
	// tenant without one is not searched.
	HasKnowledge bool `db:"has_knowledge"`
}

// QuietFor is QuietSeconds as a duration.
func (s TurnState) QuietFor() time.Duration {
	return time.Duration(s.QuietSeconds * float64(time.Second))
}

var turnStateSelect = `
	SELECT v.id, v.status, v.last_inbound_message_id,
	       COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - v.last_inbound_at), 1e9)::float8 AS quiet_seconds,
	       c.opted_out, ` + balanceOf("v.tenant_id") + ` AS credits, t.reply_price, v.summary, v.summary_through_id, ch.kind AS channel_kind,
	       COALESCE((SELECT m.agent FROM messages m WHERE m.conversation_id = v.id AND m.author = 'bot'
	                 ORDER BY m.id DESC LIMIT 1), '') AS current_agent,
	       EXISTS (SELECT 1 FROM knowledge_docs k WHERE k.tenant_id = v.tenant_id) AS has_knowledge
	FROM conversations v
	JOIN contacts c ON c.id = v.contact_id
	JOIN tenants t ON t.id = v.tenant_id
	JOIN channels ch ON ch.id = v.channel_id
	WHERE v.id = $1 AND v.tenant_id = $2`

// GetTurnInputs reads a conversation's turn state and its tenant's agents
// in one round trip, with what also queues (nil for nothing: the turn's
// memory read, MemoryRead.Queue).
func GetTurnInputs(ctx context.Context, db DBTX, tenantID string, conversationID int64, also func(*pgx.Batch)) (TurnState, []Agent, error) {
	var st TurnState
	var list []Agent
	b := &pgx.Batch{}
	b.Queue(turnStateSelect, conversationID, tenantID).Query(func(rows pgx.Rows) error {
		var err error
		st, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[TurnState])
		return notFound(err)
	})
	b.Queue(listAgentsSQL, tenantID).Query(func(rows pgx.Rows) error {
		var err error
		list, err = pgx.CollectRows(rows, pgx.RowToStructByName[Agent])
		return err
	})
	if also != nil {
		also(b)
	}
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		if errors.Is(err, ErrNotFound) {
			return st, nil, err
		}
		return st, nil, fmt.Errorf("turn inputs: %w", err)
	}
	return st, list, nil
}

// ReplyStart is how a turn's transaction begins: the conversation's turn
// state, locked, and the reply written.
type ReplyStart struct {
	State TurnState
	// ReplyID is 0 when the turn already has its reply (nothing written).
	ReplyID int64
}

// StartReply locks the conversation's turn state, records the turn's
// events on the inbound message (the routing and LLM calls that came
// before the reply: in the trace they come first) and writes the reply o (as
// InsertOutbound does), in one round trip.
// The caller must check State before committing: the reply is written
// whatever it says, so a turn that must not answer rolls back.
func StartReply(ctx context.Context, tx DBTX, o Outbound, turnEvents ...Event) (ReplyStart, error) {
	var out ReplyStart
	if o.ReplyToID == nil {
		return out, fmt.Errorf("start reply: no reply_to_id")
	}
	args, err := outboundArgs(o)
	if err != nil {
		return out, err
	}
	b := &pgx.Batch{}
	b.Queue(turnStateSelect+` FOR UPDATE OF v`, o.ConversationID, o.TenantID).Query(func(rows pgx.Rows) error {
		var err error
		out.State, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[TurnState])
		return notFound(err)
	})
	if len(turnEvents) > 0 {
		events, err := eventsJSON(turnEvents)
		if err != nil {
			return out, err
		}
		b.Queue(addEventsSQL, o.TenantID, *o.ReplyToID, events)
	}
	b.Queue(insertOutboundSQL, args...).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&out.ReplyID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		if errors.Is(err, ErrNotFound) {
			return out, err
		}
		return out, fmt.Errorf("start reply: %w", err)
	}
	return out, nil
}

// creditStripes is how many rows a tenant's balance is spread over, so
// concurrent turns of one tenant do not queue on one row (migration 0004).
const creditStripes = 16

// TurnCommit is what an answered turn writes after StartReply wrote its
// reply: the worker hands it over as data and CommitTurn batches it.
type TurnCommit struct {
	TenantID       string
	ConversationID int64
	// InboundID is the message closing the turn, which carries the turn's
	// trace; ReplyID is the reply StartReply wrote.
	InboundID, ReplyID int64
	// Price is what the reply costs (debited now, refunded if it fails).
	Price int
	// Summary, when not nil, advances the conversation's running summary.
	Summary *SummaryUpdate
	// Handoff hands the conversation to a person.
	Handoff bool
	// Events are the turn's trace events on the inbound message, in order;
	// turn.replied (the debit and balance) follows them.
	Events []Event
}

// SummaryUpdate is a new running summary covering the turns through ThroughID.
type SummaryUpdate struct {
	Text      string
	ThroughID int64
}

// TurnResult is what CommitTurn did.
type TurnResult struct {
	// Balance is the tenant's balance after the debit.
	Balance int64
}

// CommitTurn writes an answered turn in tx, in one round trip when a credit
// stripe is free: the summary, the handoff, the trace events, the debit of
// the reply and the turn.replied event. The debit comes last so the credit
// stripe it locks is held only until the commit. A tenant that can no
// longer pay is ErrNoCredits; the caller then rolls tx back.
func CommitTurn(ctx context.Context, tx DBTX, p TurnCommit) (TurnResult, error) {
	events, err := eventsJSON(p.Events)
	if err != nil {
		return TurnResult{}, fmt.Errorf("commit turn: %w", err)
	}
	before := func(b *pgx.Batch) {
		if p.Summary != nil {
			b.Queue(setSummarySQL, p.ConversationID, p.TenantID, p.Summary.Text, p.Summary.ThroughID)
		}
		if p.Handoff {
			b.Queue(`UPDATE conversations SET status = $3, handoff_reason = $4, version = version + 1, updated_at = now()
				WHERE id = $1 AND tenant_id = $2`, p.ConversationID, p.TenantID, ConversationHuman, HandoffByAgent)
		}
		if len(p.Events) > 0 {
			b.Queue(addEventsSQL, p.TenantID, p.InboundID, events)
		}
	}
	balance, err := debit(ctx, tx, p.TenantID, p.ReplyID, p.Price, before, p.InboundID)
	if err != nil {
		return TurnResult{}, err
	}
	return TurnResult{Balance: balance}, nil
}

// DebitReply charges a tenant amount credits for the reply messageID: one
// 'reply' ledger row (unique per message) and the balance, which never goes
// below zero. It returns the new balance, or ErrNoCredits. db must be a
// transaction.
//
// The fast path debits one stripe that can pay and that no other transaction
// holds, starting at a random one, without waiting. It runs under a savepoint:
// a row lock it took on a stripe that could no longer pay (Postgres keeps
// those) is released by rolling back to it. Only then does the slow path
// lock every stripe in stripe order, as AddCredits does, and gather the
// balance into stripe 0; a transaction never waits for a stripe while holding
// another out of order, so debits cannot deadlock each other.
func DebitReply(ctx context.Context, db DBTX, tenantID string, messageID int64, amount int) (int64, error) {
	return debit(ctx, db, tenantID, messageID, amount, nil, 0)
}

// debit is DebitReply with CommitTurn's statements: before (nil for none)
// queues statements sent ahead of the debit in its first round trip; with
// repliedTo (the inbound message closing the turn; 0 for none) the debit
// also writes the turn.replied trace event on it, in the debit's own
// statement.
func debit(ctx context.Context, db DBTX, tenantID string, messageID int64, amount int, before func(*pgx.Batch), repliedTo int64) (int64, error) {
	start := rand.IntN(creditStripes)
	// First a stripe no one holds; then, every stripe that could pay being
	// busy (or none can), wait for one.
	for _, skipLocked := range []bool{true, false} {
		b := &pgx.Batch{}
		if skipLocked {
			if before != nil {
				before(b)
			}
			b.Queue(`SAVEPOINT conversa_debit`)
		} else {
			b.Queue(`ROLLBACK TO SAVEPOINT conversa_debit`)
		}
		balance, found := int64(0), false
		queueDebit(b, tenantID, messageID, amount, start, skipLocked, repliedTo, &balance, &found)
		if err := db.SendBatch(ctx, b).Close(); err != nil {
			return 0, fmt.Errorf("debit reply: %w", err)
		}
		if found {
			return balance, nil
		}
	}

	// No single stripe can pay: gather them.
	if _, err := db.Exec(ctx, `ROLLBACK TO SAVEPOINT conversa_debit`); err != nil {
		return 0, fmt.Errorf("debit reply: %w", err)
	}
	var total int64
	err := db.QueryRow(ctx, `
		SELECT COALESCE(sum(credits), 0)::bigint FROM (
			SELECT credits FROM credit_stripes WHERE tenant_id = $1 ORDER BY stripe FOR UPDATE
		) s`, tenantID).Scan(&total)
	if err != nil {
		return 0, fmt.Errorf("debit reply: %w", err)
	}
	if total < int64(amount) {
		return 0, ErrNoCredits
	}
	b := &pgx.Batch{}
	b.Queue(`
		WITH s AS (
			UPDATE credit_stripes SET credits = CASE WHEN stripe = 0 THEN $3 ELSE 0 END
			WHERE tenant_id = $1
		)
		INSERT INTO credit_ledger (tenant_id, amount, reason, message_id) VALUES ($1, -$4::bigint, 'reply', $2)`,
		tenantID, messageID, total-int64(amount), amount)
	if repliedTo != 0 {
		queueRepliedEvent(b, tenantID, repliedTo, messageID, amount)
	}
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		return 0, fmt.Errorf("debit reply: gather stripes: %w", err)
	}
	return total - int64(amount), nil
}

// queueRepliedEvent queues the turn.replied trace event on the inbound
// message after the debit that gathered the stripes (the fast path's debit
// writes it itself: queueDebit): the reply, what it cost and the balance
// after it.
func queueRepliedEvent(b *pgx.Batch, tenantID string, inboundID, replyID int64, amount int) {
	b.Queue(`
		INSERT INTO message_events (tenant_id, message_id, kind, detail)
		SELECT $1, $2, 'turn.replied', `+repliedDetail("$3", "$4", balanceOf("$1")),
		tenantID, inboundID, replyID, amount)
}

// repliedDetail is the SQL of the turn.replied event's detail: the reply,
// the credits debited and the balance after the debit.
func repliedDetail(replyID, debited, balance string) string {
	return `jsonb_build_object('reply_message_id', ` + replyID + `::bigint, 'credits_debited', ` + debited +
		`::int, 'credits_balance', ` + balance + `)`
}

// setSummarySQL advances a conversation's running summary to cover the turns
// through $4. It never moves the summary backwards.
const setSummarySQL = `
		UPDATE conversations SET summary = $3, summary_through_id = $4, updated_at = now()
		WHERE id = $1 AND tenant_id = $2 AND summary_through_id < $4`

// queueDebit queues the debit of one stripe that can pay, the first from
// start on. With skipLocked it takes a stripe no one holds; without, it
// picks one as of its snapshot and waits for it, locking that row only
// (by its key, so the lock is never left on a row that is not used) and
// checking the stripe can still pay once it has it. With repliedTo (not 0)
// a debit that happened writes the turn.replied event on that message in
// the same statement: the reply, what it cost and the balance after it.
func queueDebit(b *pgx.Batch, tenantID string, messageID int64, amount, start int, skipLocked bool, repliedTo int64, balance *int64, found *bool) {
	pick := `
			SELECT stripe FROM credit_stripes
			WHERE tenant_id = $1 AND credits >= $3
			ORDER BY (stripe + $5 - $4) % $5
			LIMIT 1 FOR UPDATE SKIP LOCKED`
	if !skipLocked {
		pick = `
			SELECT c.stripe FROM credit_stripes c
			WHERE c.tenant_id = $1 AND c.stripe = (
				SELECT stripe FROM credit_stripes
				WHERE tenant_id = $1 AND credits >= $3
				ORDER BY (stripe + $5 - $4) % $5 LIMIT 1)
			FOR UPDATE`
	}
	b.Queue(`
		WITH s AS (`+pick+`
		), d AS (
			UPDATE credit_stripes c SET credits = c.credits - $3
			FROM s WHERE c.tenant_id = $1 AND c.stripe = s.stripe AND c.credits >= $3
			RETURNING c.credits
		), l AS (
			INSERT INTO credit_ledger (tenant_id, amount, reason, message_id)
			SELECT $1, -$3::bigint, 'reply', $2 FROM d
		), a AS (
			SELECT `+balanceOf("$1")+` - $3 AS balance FROM d
		), e AS (
			INSERT INTO message_events (tenant_id, message_id, kind, detail)
			SELECT $1, $6::bigint, 'turn.replied', `+repliedDetail("$2", "$3", "a.balance")+`
			FROM a WHERE $6::bigint <> 0
		)
		SELECT balance FROM a`,
		tenantID, messageID, amount, start, creditStripes, repliedTo).QueryRow(func(row pgx.Row) error {
		err := row.Scan(balance)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		*found = err == nil
		return err
	})
}
