package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/twilio"
	"github.com/conversa/conversa/store"
)

// DB is what workers need from Postgres: queries and transactions. Workers
// take this rather than a pool so rivertest can hand them the test's
// transaction (Begin on a transaction opens a savepoint).
type DB interface {
	store.DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Deps is everything the workers depend on.
type Deps struct {
	// Pacer spaces sends and look-ups per sender; nil = AddWorkers builds
	// the process's one pacer (and its Redis circuit breaker) for every
	// worker that calls Twilio.
	Pacer  *Pacer
	DB     DB
	Logger *slog.Logger
	// Redis is optional (nil = no Redis): memory and pacing fall back to Postgres.
	Redis *redis.Client
	// PublicBaseURL builds StatusCallback URLs.
	PublicBaseURL string
	// Debounce is the quiet window a turn waits out.
	Debounce time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Metrics may be nil.
	Metrics *Metrics
	// LLM answers turns; nil means the offline provider. Give it behind an
	// agents.Gate so every turn of the process shares one back-off.
	LLM agents.Provider
	// LLMTimeout is LLM_TIMEOUT: the turn job's timeout follows from it
	// (TurnTimeout). 0 means DefaultLLMTimeout.
	LLMTimeout time.Duration
	// LLMGiveUp is LLM_GIVE_UP: how long after the customer's message an
	// unavailable LLM is waited for. 0 means DefaultLLMGiveUp.
	LLMGiveUp time.Duration
	// Memory is the hybrid conversation memory; nil means one on Redis
	// with the "conversa:" key prefix.
	Memory *store.Memory
	// Sealer opens the Twilio auth tokens stored sealed.
	Sealer *store.Sealer
	// Twilio sends messages (twilio.New with TWILIO_API_URL and TWILIO_TIMEOUT).
	// Without it (and Sealer) conversa.send is not registered.
	Twilio *twilio.Client
	// Media fetches and transcribes inbound attachments (zero: never fetched).
	Media Media
	// Tools POSTs agents' HTTP tool calls (NewToolHTTP with
	// TOOLS_ALLOW_PRIVATE); zero means NewToolHTTP(false).
	Tools ToolHTTP
	// Events POSTs event webhooks (NewEventHTTP with TOOLS_ALLOW_PRIVATE);
	// zero means NewEventHTTP(false).
	Events EventHTTP
	// ReconcileAfter is RECONCILE_AFTER (0 = DefaultReconcileAfter).
	ReconcileAfter time.Duration
}

// AddWorkers registers every Conversa worker on w.
func AddWorkers(w *river.Workers, d Deps) error {
	if d.Now == nil {
		d.Now = time.Now
	}
	d.Pacer = d.pacer()
	if err := river.AddWorkerSafely(w, NewReplyWorker(d)); err != nil {
		return fmt.Errorf("add reply worker: %w", err)
	}
	if d.Twilio != nil && d.Sealer != nil {
		if err := river.AddWorkerSafely(w, NewSendWorker(d)); err != nil {
			return fmt.Errorf("add send worker: %w", err)
		}
		if err := river.AddWorkerSafely(w, NewReconcileWorker(d)); err != nil {
			return fmt.Errorf("add reconcile worker: %w", err)
		}
	}
	if d.Sealer != nil {
		if err := river.AddWorkerSafely(w, NewEventWorker(d)); err != nil {
			return fmt.Errorf("add event worker: %w", err)
		}
	}
	if err := river.AddWorkerSafely(w, NewEventPruneWorker(d)); err != nil {
		return fmt.Errorf("add event prune worker: %w", err)
	}
	if err := river.AddWorkerSafely(w, NewStuckTurnsWorker(d)); err != nil {
		return fmt.Errorf("add stuck turns worker: %w", err)
	}
	if err := river.AddWorkerSafely(w, NewIdempotencyCleanupWorker(d)); err != nil {
		return fmt.Errorf("add idempotency cleanup worker: %w", err)
	}
	if err := river.AddWorkerSafely(w, NewRetentionWorker(d)); err != nil {
		return fmt.Errorf("add retention worker: %w", err)
	}
	return nil
}

// pacer is d.Pacer, or a new one when the caller (a test) built a worker on
// its own.
func (d Deps) pacer() *Pacer {
	if d.Pacer != nil {
		return d.Pacer
	}
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Pacer{Redis: d.Redis, DB: d.DB, MaxWait: paceMaxWait, Logger: logger}
}
