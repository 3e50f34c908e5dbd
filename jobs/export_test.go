package jobs

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// SetBeforeCommit makes the turn run f inside its transaction just before
// commit, so tests can fail a turn after it wrote everything.
func (w *ReplyWorker) SetBeforeCommit(f func(ctx context.Context, tx pgx.Tx) error) {
	w.beforeCommit = f
}

// NoteOutcome is noteOutcome, for the metrics middleware's test.
func NoteOutcome(ctx context.Context, outcome string) { noteOutcome(ctx, outcome) }

// SetBatch sets how many messages one retention transaction erases.
func (w *RetentionWorker) SetBatch(n int) { w.batch = n }
