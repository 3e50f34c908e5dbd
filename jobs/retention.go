package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/store"
)

// retentionInterval is how often message bodies past their tenant's
// retention are erased: retention is counted in days, an hour late is on time.
const retentionInterval = time.Hour

// retentionBatch bounds the messages one retention transaction erases, so a
// first run over years of messages is many short transactions, not one.
const retentionBatch = 500

// RetentionArgs is the periodic erasure of message bodies older than each
// tenant's retention (PUT /tenants/{id}/retention; see RetentionWorker).
type RetentionArgs struct{}

// Kind is stable: never rename a shipped job kind.
func (RetentionArgs) Kind() string { return "conversa.retention" }

// InsertOpts keeps one run at a time.
func (RetentionArgs) InsertOpts() river.InsertOpts {
	return periodicOpts()
}

// RetentionWorker works conversa.retention: for every tenant with a
// retention, it erases the messages older than it exactly as a contact's
// erasure erases messages (store.EraseExpiredMessages: bodies, media,
// transcripts, the personal parts of their trace, summaries that folded them
// in, their conversations' Redis memory), in batches of short transactions.
// A run that is cut off resumes where it stopped; nothing is erased twice.
type RetentionWorker struct {
	river.WorkerDefaults[RetentionArgs]
	db     DB
	memory *store.Memory
	logger *slog.Logger
	batch  int
}

// NewRetentionWorker builds the conversa.retention worker.
func NewRetentionWorker(d Deps) *RetentionWorker {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	mem := d.Memory
	if mem == nil {
		mem = store.NewMemory(d.Redis, store.MemoryPrefix, agents.MemoryWindow)
	}
	return &RetentionWorker{db: d.DB, memory: mem, logger: d.Logger, batch: retentionBatch}
}

// Work erases every tenant's expired messages, a batch per transaction.
func (w *RetentionWorker) Work(ctx context.Context, job *river.Job[RetentionArgs]) error {
	tenants, err := store.Retentions(ctx, w.db)
	if err != nil {
		return err
	}
	for _, t := range tenants {
		total := 0
		for {
			var b store.RetentionBatch
			err := inTx(ctx, w.db, func(tx pgx.Tx) error {
				var err error
				b, err = store.EraseExpiredMessages(ctx, tx, w.memory, t.TenantID, t.Days, w.batch)
				return err
			})
			if err != nil {
				// Retried by River; the batches before this one are done.
				return err
			}
			total += b.Messages
			if b.Messages < w.batch {
				break
			}
		}
		if total > 0 {
			w.logger.Info("retention: message bodies erased", "tenant_id", t.TenantID, "messages", total, "days", t.Days)
		}
	}
	return nil
}
