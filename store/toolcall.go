package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ToolCall is one recorded HTTP tool call of a turn (tool_calls, migration
// 0012): the call as the model asked for it, and its result once recorded.
// A turn is keyed by its closing inbound message; a call by its place in
// the turn (Round from 1, Index from 0). docs/tools.md has the rule.
type ToolCall struct {
	Round          int    `db:"round"`
	Index          int    `db:"idx"`
	CallID         string `db:"call_id"`
	Name           string `db:"name"`
	Arguments      string `db:"arguments"`
	IdempotencyKey string `db:"idempotency_key"`
	// Attempts is how many times the endpoint was POSTed.
	Attempts int `db:"attempts"`
	// Outcome is nil until the result is recorded.
	Outcome    *ToolOutcome `db:"outcome"`
	HTTPStatus *int         `db:"http_status"`
	// Result is what the model was given.
	Result    *string `db:"result"`
	LatencyMS *int    `db:"latency_ms"`
}

// Done reports whether the call's result is recorded.
func (c ToolCall) Done() bool { return c.Outcome != nil }

// ToolOutcome classifies a tool call's result (the outcome label of
// conversa_tool_calls_total, and the column's constraint).
type ToolOutcome string

// Tool call outcomes.
const (
	ToolOK          ToolOutcome = "ok"
	ToolTimeout     ToolOutcome = "timeout"
	ToolHTTPError   ToolOutcome = "http_error" // a non-2xx answer
	ToolBadAnswer   ToolOutcome = "bad_answer" // not JSON or text, or over the cap
	ToolNetwork     ToolOutcome = "network"
	ToolRefused     ToolOutcome = "refused"       // the URL is not one Conversa may call
	ToolUnknownTool ToolOutcome = "unknown_tool"  // the model named a tool the agent lacks
	ToolBadArgs     ToolOutcome = "bad_arguments" // the model's arguments were not a JSON object
)

const toolCallColumns = `round, idx, call_id, name, arguments, idempotency_key, attempts, outcome, http_status, result, latency_ms`

// TurnToolCalls returns the turn's recorded tool calls, in order.
func TurnToolCalls(ctx context.Context, db DBTX, tenantID string, messageID int64) ([]ToolCall, error) {
	rows, err := db.Query(ctx, `SELECT `+toolCallColumns+` FROM tool_calls
		WHERE message_id = $1 AND tenant_id = $2 ORDER BY round, idx`, messageID, tenantID)
	if err != nil {
		return nil, fmt.Errorf("turn tool calls: %w", err)
	}
	calls, err := pgx.CollectRows(rows, pgx.RowToStructByName[ToolCall])
	if err != nil {
		return nil, fmt.Errorf("turn tool calls: %w", err)
	}
	return calls, nil
}

// RecordToolRound records the calls of one round of a turn before any is
// made and returns the round as recorded: when the round was recorded
// already (two runs of one turn raced), the first record wins and is what
// both go on with.
func RecordToolRound(ctx context.Context, db DBTX, tenantID string, messageID int64, calls []ToolCall) ([]ToolCall, error) {
	if len(calls) == 0 {
		return nil, nil
	}
	b := &pgx.Batch{}
	for _, c := range calls {
		b.Queue(`INSERT INTO tool_calls (tenant_id, message_id, round, idx, call_id, name, arguments, idempotency_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (message_id, round, idx) DO NOTHING`,
			tenantID, messageID, c.Round, c.Index, c.CallID, c.Name, c.Arguments, c.IdempotencyKey)
	}
	var out []ToolCall
	b.Queue(`SELECT `+toolCallColumns+` FROM tool_calls WHERE message_id = $1 AND round = $2 ORDER BY idx`,
		messageID, calls[0].Round).Query(func(rows pgx.Rows) error {
		var err error
		out, err = pgx.CollectRows(rows, pgx.RowToStructByName[ToolCall])
		return err
	})
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("record tool round: %w", err)
	}
	return out, nil
}

// StartToolAttempt counts one POST of a recorded call, before it is made,
// and returns its number (1 for the first).
func StartToolAttempt(ctx context.Context, db DBTX, messageID int64, round, idx int) (int, error) {
	var n int
	err := db.QueryRow(ctx, `UPDATE tool_calls SET attempts = attempts + 1
		WHERE message_id = $1 AND round = $2 AND idx = $3 RETURNING attempts`, messageID, round, idx).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("start tool attempt: %w", notFound(err))
	}
	return n, nil
}

// ToolResult is a call's result as RecordToolResult writes it.
type ToolResult struct {
	Round, Index int
	Outcome      ToolOutcome
	HTTPStatus   int // 0: no answer
	Result       string
	LatencyMS    int
}

// RecordToolResult records a call's result together with its trace event
// on the turn's inbound message, in one implicit transaction. A result
// already recorded is kept (the first wins).
func RecordToolResult(ctx context.Context, db DBTX, tenantID string, messageID int64, r ToolResult, event Event) error {
	events, err := eventsJSON([]Event{event})
	if err != nil {
		return fmt.Errorf("record tool result: %w", err)
	}
	var status *int
	if r.HTTPStatus != 0 {
		status = &r.HTTPStatus
	}
	b := &pgx.Batch{}
	b.Queue(`UPDATE tool_calls SET outcome = $4, http_status = $5, result = $6, latency_ms = $7, finished_at = now()
		WHERE message_id = $1 AND round = $2 AND idx = $3 AND outcome IS NULL`,
		messageID, r.Round, r.Index, r.Outcome, status, r.Result, r.LatencyMS)
	b.Queue(addEventsSQL, tenantID, messageID, events)
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("record tool result: %w", err)
	}
	return nil
}
