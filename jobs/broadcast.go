package jobs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// broadcastCheckEvery is how long conversa.broadcast snoozes while some of
// the broadcast's messages are still unsettled: at most 5 s, so the snoozed
// job stays "available" and needs no scheduler round (see FACTS on River's
// short snoozes).
const broadcastCheckEvery = 2 * time.Second

// BroadcastWorker works conversa.broadcast: once every message of a
// broadcast is settled (store.FinishBroadcast) it sets the broadcast's
// finished_at and records broadcast.finished, in one transaction; until
// then it snoozes. A snooze takes no attempt, so a broadcast of 100,000
// messages at 1/s waits its 28 hours.
type BroadcastWorker struct {
	river.WorkerDefaults[jobargs.BroadcastArgs]
	db     DB
	logger *slog.Logger
	every  time.Duration
}

// NewBroadcastWorker builds the conversa.broadcast worker.
func NewBroadcastWorker(d Deps) *BroadcastWorker {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &BroadcastWorker{db: d.DB, logger: d.Logger, every: broadcastCheckEvery}
}

// Work finishes the broadcast, or snoozes until it can.
func (w *BroadcastWorker) Work(ctx context.Context, job *river.Job[jobargs.BroadcastArgs]) error {
	a := job.Args
	unsettled, err := store.UnsettledBroadcastMessages(ctx, w.db, a.TenantID, a.BroadcastID)
	if errors.Is(err, store.ErrNotFound) {
		return river.JobCancel(err)
	}
	if err != nil {
		return err
	}
	if unsettled > 0 {
		return river.JobSnooze(w.every)
	}
	var finished bool
	err = inTx(ctx, w.db, func(tx pgx.Tx) error {
		finished, err = store.FinishBroadcast(ctx, tx, a.TenantID, a.BroadcastID)
		if err != nil || !finished {
			return err
		}
		t, err := store.TallyBroadcast(ctx, tx, a.BroadcastID)
		if err != nil {
			return err
		}
		return recordBroadcastFinished(ctx, tx, a, t)
	})
	if err != nil {
		return err
	}
	if finished {
		w.logger.Info("broadcast finished", "tenant_id", a.TenantID, "broadcast_id", a.BroadcastID, "job_id", job.ID)
	}
	return nil
}

// recordBroadcastFinished records the broadcast.finished event, data
// {broadcast_id, counts}, in the transaction that finished the broadcast.
func recordBroadcastFinished(ctx context.Context, tx pgx.Tx, a jobargs.BroadcastArgs, t store.BroadcastTally) error {
	return store.RecordEvent(ctx, tx, store.NewEvent{TenantID: a.TenantID, Type: store.EventBroadcastFinished,
		Data: map[string]any{"broadcast_id": a.BroadcastID, "counts": t.Counts}})
}
