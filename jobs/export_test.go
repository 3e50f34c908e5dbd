package jobs

import (
	"time"

	"context"

	"github.com/jackc/pgx/v5"

	"github.com/conversa/conversa/store"
)

// SetBeforeCommit makes the turn run f inside its transaction just before
// commit, so tests can fail a turn after it wrote everything.
func (w *ReplyWorker) SetBeforeCommit(f func(ctx context.Context, tx pgx.Tx) error) {
	w.beforeCommit = f
}

// SetAfterToolCall makes the turn run f after each tool POST, before its
// result is recorded, so tests can crash a turn between the two.
func (w *ReplyWorker) SetAfterToolCall(f func(ctx context.Context, c store.ToolCall) error) {
	w.afterToolCall = f
}

// NoteOutcome is noteOutcome, for the metrics middleware's test.
func NoteOutcome(ctx context.Context, outcome string) { noteOutcome(ctx, outcome) }

// SetBatch sets how many messages one retention transaction erases.
func (w *RetentionWorker) SetBatch(n int) { w.batch = n }

// SetCheckEvery sets how long conversa.broadcast snoozes between checks.
func (w *BroadcastWorker) SetCheckEvery(d time.Duration) { w.every = d }

// BeginTurn is beginTurn, for its test.
func BeginTurn(ctx context.Context, db DB) (pgx.Tx, error) { return beginTurn(ctx, db) }
