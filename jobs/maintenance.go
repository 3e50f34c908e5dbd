package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/conversa/conversa/store"
)

// QueueMaintenance runs the periodic jobs, apart from turns and sends.
const QueueMaintenance = "maintenance"

// oneAtATime makes a periodic job unique while one is waiting or running,
// but not once it completed (River's default states would keep a completed
// run blocking the next for a day).
var oneAtATime = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
	rivertype.JobStateRunning, rivertype.JobStateScheduled,
}

// periodicOpts are every periodic job's insert options: the maintenance
// queue, and one run at a time.
func periodicOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 5, UniqueOpts: river.UniqueOpts{ByState: oneAtATime}}
}

// Periodic intervals.
const (
	// stuckInterval is how often the stuck-turn detector runs.
	stuckInterval = time.Minute
	// idempotencyCleanupInterval is how often expired Idempotency-Keys go.
	idempotencyCleanupInterval = time.Hour
)

// ReconcileInterval is how often reconciliation runs: every
// RECONCILE_AFTER/2, at most a minute apart.
func ReconcileInterval(after time.Duration) time.Duration {
	if after <= 0 {
		after = DefaultReconcileAfter
	}
	return max(min(after/2, time.Minute), time.Second)
}

// PeriodicJobs are Conversa's periodic jobs: reconciliation, stuck-turn
// detection, the Idempotency-Key cleanup and retention. River's leader inserts each
// once per interval across a fleet; their uniqueness keeps one run at a time.
func PeriodicJobs(reconcileAfter time.Duration) []*river.PeriodicJob {
	every := func(d time.Duration, args river.JobArgs) *river.PeriodicJob {
		return river.NewPeriodicJob(river.PeriodicInterval(d),
			func() (river.JobArgs, *river.InsertOpts) { return args, nil },
			&river.PeriodicJobOpts{ID: args.Kind(), RunOnStart: true})
	}
	return []*river.PeriodicJob{
		every(ReconcileInterval(reconcileAfter), ReconcileArgs{}),
		every(stuckInterval, StuckTurnsArgs{}),
		every(idempotencyCleanupInterval, IdempotencyCleanupArgs{}),
		every(retentionInterval, RetentionArgs{}),
		every(idempotencyCleanupInterval, EventPruneArgs{}),
	}
}

// StuckTurnsArgs is the periodic stuck-turn detection (see StuckTurnsWorker).
type StuckTurnsArgs struct{}

// Kind is stable: never rename a shipped job kind.
func (StuckTurnsArgs) Kind() string { return "conversa.stuck_turns" }

// InsertOpts keeps one run at a time.
func (StuckTurnsArgs) InsertOpts() river.InsertOpts {
	return periodicOpts()
}

// stuckBatch bounds the messages one stuck-turn transaction scans.
const stuckBatch = 1000

// StuckTurnsWorker works conversa.stuck_turns: every inbound message is
// checked once, store.StuckAfter after it arrived; one with a turn job but
// neither a reply nor a recorded reason gets a turn.stuck trace event (job
// state, attempts, last error) and counts in conversa_turns_stuck_total.
type StuckTurnsWorker struct {
	river.WorkerDefaults[StuckTurnsArgs]
	db      DB
	logger  *slog.Logger
	metrics *Metrics
	after   time.Duration
}

// NewStuckTurnsWorker builds the conversa.stuck_turns worker.
func NewStuckTurnsWorker(d Deps) *StuckTurnsWorker {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &StuckTurnsWorker{db: d.DB, logger: d.Logger, metrics: d.Metrics, after: store.StuckAfter}
}

// Work scans what arrived since the last run, a batch per transaction.
func (w *StuckTurnsWorker) Work(ctx context.Context, _ *river.Job[StuckTurnsArgs]) error {
	for {
		var stuck []store.StuckTurn
		var more bool
		err := inTx(ctx, w.db, func(tx pgx.Tx) error {
			var err error
			stuck, more, err = store.FindStuckTurns(ctx, tx, w.after, stuckBatch)
			return err
		})
		if err != nil {
			return err
		}
		for _, s := range stuck {
			w.metrics.TurnStuck()
			state := ""
			if s.JobState != nil {
				state = *s.JobState
			}
			w.logger.Warn("turn stuck: no reply and no reason", "tenant_id", s.TenantID, "conversation_id", s.ConversationID,
				"message_id", s.MessageID, "job_state", state, "age_seconds", int(s.AgeSeconds))
		}
		if !more {
			return nil
		}
	}
}

// IdempotencyCleanupArgs is the periodic removal of expired Idempotency-Keys.
type IdempotencyCleanupArgs struct{}

// Kind is stable: never rename a shipped job kind.
func (IdempotencyCleanupArgs) Kind() string { return "conversa.idempotency_cleanup" }

// InsertOpts keeps one run at a time.
func (IdempotencyCleanupArgs) InsertOpts() river.InsertOpts {
	return periodicOpts()
}

// IdempotencyCleanupWorker works conversa.idempotency_cleanup, in batches
// so no statement holds many row locks.
type IdempotencyCleanupWorker struct {
	river.WorkerDefaults[IdempotencyCleanupArgs]
	db DB
}

// NewIdempotencyCleanupWorker builds the conversa.idempotency_cleanup worker.
func NewIdempotencyCleanupWorker(d Deps) *IdempotencyCleanupWorker {
	return &IdempotencyCleanupWorker{db: d.DB}
}

// Work deletes expired records until none is left.
func (w *IdempotencyCleanupWorker) Work(ctx context.Context, job *river.Job[IdempotencyCleanupArgs]) error {
	for {
		n, err := store.DeleteExpiredIdempotencyKeys(ctx, w.db, 5000)
		if err != nil || n < 5000 {
			return err
		}
	}
}

// maintenanceMetrics are the periodic jobs' metrics.
type maintenanceMetrics struct {
	reconciled *prometheus.CounterVec
	turnsStuck prometheus.Counter
}

func newMaintenanceMetrics(reg prometheus.Registerer) maintenanceMetrics {
	m := maintenanceMetrics{
		reconciled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conversa_reconcile_total",
			Help: "Replies looked up at Twilio by reconciliation, by outcome (applied, unchanged, gave_up, not_found, unauthorized, rate_limited, unavailable).",
		}, []string{"outcome"}),
		turnsStuck: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "conversa_turns_stuck_total",
			Help: "Inbound messages found with neither a reply nor a reason for none, five minutes after they arrived.",
		}),
	}
	reg.MustRegister(m.reconciled, m.turnsStuck)
	return m
}

// Reconciled counts one reconciliation look-up by outcome.
func (m *Metrics) Reconciled(outcome string) {
	if m != nil {
		m.reconciled.WithLabelValues(outcome).Inc()
	}
}

// TurnStuck counts one stuck turn.
func (m *Metrics) TurnStuck() {
	if m != nil {
		m.turnsStuck.Inc()
	}
}
