package jobs

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/conversa/conversa/internal/egress"
	"github.com/conversa/conversa/internal/signing"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// Event webhooks (README, "Event webhooks"). The database writes events in
// the transactions of the changes they report (store/events.go); the relay
// turns each committed event into one conversa.event job per endpoint that
// wants it; the job POSTs it, signed, and River retries it for about a day.

const (
	// EventTimeout bounds one POST to a receiver: a slower answer is a
	// failure, retried.
	EventTimeout = 10 * time.Second
	// EventEndpointConcurrency is how many deliveries to one endpoint a
	// process makes at once; the rest wait their turn (snoozed), so a slow
	// endpoint holds at most this many of the events queue's workers and
	// the others always have EventWorkers - EventEndpointConcurrency.
	EventEndpointConcurrency = 16
	// EventWorkers is the events queue's workers per process.
	EventWorkers = 48
	// eventRetryCap is the longest wait between two deliveries of an event.
	eventRetryCap = time.Hour
)

// EventHTTP POSTs events: the egress client (no redirects followed, private
// addresses refused after DNS unless allowed) and the same rule on the URL.
type EventHTTP struct {
	Client *http.Client
	Check  func(url string) error
	// Timeout bounds one POST (0 = EventTimeout).
	Timeout time.Duration
}

// NewEventHTTP is a process's event poster; allowPrivate is TOOLS_ALLOW_PRIVATE.
func NewEventHTTP(allowPrivate bool) EventHTTP {
	return EventHTTP{
		Client: egress.NewClient(egress.Options{AllowPrivate: allowPrivate, Timeout: EventTimeout}),
		Check:  func(url string) error { return egress.CheckURL(url, allowPrivate) },
	}
}

// EventWorker works conversa.event: one POST of one event to one endpoint.
type EventWorker struct {
	river.WorkerDefaults[jobargs.EventArgs]
	db      DB
	sealer  *store.Sealer
	http    EventHTTP
	logger  *slog.Logger
	metrics *Metrics
	slots   endpointSlots
}

// NewEventWorker builds the conversa.event worker; d.Sealer is required.
func NewEventWorker(d Deps) *EventWorker {
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := d.Events
	if h.Client == nil {
		h = NewEventHTTP(false)
	}
	return &EventWorker{db: d.DB, sealer: d.Sealer, http: h, logger: logger, metrics: d.Metrics,
		slots: endpointSlots{n: EventEndpointConcurrency, busy: map[int64]int{}}}
}

// EventRetryDelay is how long after its attempt-th failed delivery an event
// is tried again: 1 s, 2 s, 4 s, ... doubling up to an hour (±10 %).
// With jobargs.EventMaxAttempts that is about 24 h of retries.
func EventRetryDelay(attempt int) time.Duration {
	d := time.Second << min(max(attempt-1, 0), 12)
	return min(d, eventRetryCap)
}

// NextRetry is EventRetryDelay with ±10 % jitter.
func (w *EventWorker) NextRetry(job *river.Job[jobargs.EventArgs]) time.Time {
	jitter := 0.9 + 0.2*rand.Float64()
	return time.Now().Add(time.Duration(float64(EventRetryDelay(job.Attempt)) * jitter))
}

// Timeout leaves the POST its whole EventTimeout.
func (w *EventWorker) Timeout(*river.Job[jobargs.EventArgs]) time.Duration {
	return EventTimeout + 5*time.Second
}

// Work delivers one event to one endpoint: any 2xx is delivered; anything
// else (an error status, a redirect, no answer within EventTimeout) is an
// error River retries. An endpoint or event that is gone cancels the job.
func (w *EventWorker) Work(ctx context.Context, job *river.Job[jobargs.EventArgs]) error {
	a := job.Args
	if !w.slots.take(a.EndpointID) {
		// The endpoint is busy (slow, or a burst): come back in a second or
		// two, long enough that a backlog does not churn the queue.
		return river.JobSnooze(time.Second + time.Duration(rand.IntN(1000))*time.Millisecond)
	}
	defer w.slots.give(a.EndpointID)
	d, err := store.LoadEventDelivery(ctx, w.db, w.sealer, a.TenantID, a.EndpointID, a.EventID)
	if errors.Is(err, store.ErrNotFound) {
		return river.JobCancel(errors.New("the endpoint or the event no longer exists"))
	}
	if err != nil {
		return err
	}
	err = w.post(ctx, d, a.EventID)
	w.metrics.EventDelivery(d.Type, err == nil, time.Since(d.CreatedAt))
	if err != nil {
		w.logger.Info("event delivery failed", "tenant_id", a.TenantID, "endpoint_id", a.EndpointID,
			"event_id", a.EventID, "job_id", job.ID, "attempt", job.Attempt, "error", err.Error())
		return err
	}
	// Delivered: complete the job now, in a transaction of its own, rather
	// than in River's batched completer a moment later, so a process killed
	// right after the receiver's 2xx leaves the job completed and the event
	// is not POSTed again (the chaos run counts those).
	// The commit need not wait for the WAL flush: it guards against this
	// process dying, not Postgres (a Postgres crash may then POST it again,
	// which receivers dedupe on the event id).
	if err := inTx(ctx, w.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		_, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job)
		return err
	}); err != nil {
		w.logger.Warn("event delivered; completing its job failed (River completes it)", "job_id", job.ID, "error", err.Error())
	}
	return nil
}

// post makes one POST of d and says what came of it.
func (w *EventWorker) post(ctx context.Context, d store.DeliveryPayload, eventID int64) error {
	if err := w.http.Check(d.URL); err != nil {
		return fmt.Errorf("the endpoint's URL may not be called: %w", err)
	}
	timeout := cmp.Or(w.http.Timeout, EventTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(d.Body))
	if err != nil {
		return fmt.Errorf("the endpoint's URL is not valid: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Conversa")
	req.Header.Set("X-Conversa-Event-Id", strconv.FormatInt(eventID, 10))
	req.Header.Set("X-Conversa-Event-Type", d.Type)
	req.Header.Set(signing.HeaderName, signing.Header(d.Secrets, d.Body))
	resp, err := w.http.Client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no answer within %s", timeout)
		}
		return fmt.Errorf("could not reach the endpoint: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the endpoint answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// endpointSlots bounds a process's concurrent deliveries per endpoint.
type endpointSlots struct {
	n    int
	mu   sync.Mutex
	busy map[int64]int
}

func (s *endpointSlots) take(endpoint int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[endpoint] >= s.n {
		return false
	}
	s.busy[endpoint]++
	return true
}

func (s *endpointSlots) give(endpoint int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[endpoint]--; s.busy[endpoint] <= 0 {
		delete(s.busy, endpoint)
	}
}

// EventRelay turns committed events into their conversa.event jobs: one
// transaction at a time across the fleet (store.RelayEvents holds the
// relay's lock), each taking up to Batch events, giving them their order
// (seq) and inserting their jobs. Every worker process runs one; the others
// find the lock held and wait for the next tick.
type EventRelay struct {
	DB     DB
	River  *river.Client[pgx.Tx]
	Logger *slog.Logger
	// Interval is the pause when nothing was waiting (0 = 50 ms).
	Interval time.Duration
	// Batch bounds one relay transaction (0 = 500 events).
	Batch int
}

// Run relays until ctx ends.
func (r *EventRelay) Run(ctx context.Context) {
	interval := r.Interval
	if interval <= 0 {
		interval = 50 * time.Millisecond
	}
	logger := r.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	for {
		n, err := r.RelayOnce(ctx)
		if err != nil && ctx.Err() == nil {
			logger.Warn("event relay failed; retrying", "error", err.Error())
		}
		if n > 0 && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// RelayOnce makes one relay transaction and returns how many events it relayed.
func (r *EventRelay) RelayOnce(ctx context.Context) (int, error) {
	batch := r.Batch
	if batch <= 0 {
		batch = 500
	}
	var relayed int
	err := inTx(ctx, r.DB, func(tx pgx.Tx) error {
		deliveries, n, ok, err := store.RelayEvents(ctx, tx, batch)
		if err != nil || !ok {
			return err
		}
		relayed = n
		if len(deliveries) == 0 {
			return nil
		}
		params := make([]river.InsertManyParams, len(deliveries))
		for i, d := range deliveries {
			params[i] = river.InsertManyParams{Args: jobargs.EventArgs{TenantID: d.TenantID, EndpointID: d.EndpointID, EventID: d.EventID}}
		}
		if _, err := r.River.InsertManyTx(ctx, tx, params); err != nil {
			return fmt.Errorf("insert event jobs: %w", err)
		}
		return nil
	})
	return relayed, err
}

// EventPruneArgs is the periodic removal of events older than store.EventsKept.
type EventPruneArgs struct{}

// Kind is stable: never rename a shipped job kind.
func (EventPruneArgs) Kind() string { return "conversa.event_prune" }

// InsertOpts keeps one run at a time.
func (EventPruneArgs) InsertOpts() river.InsertOpts { return periodicOpts() }

// EventPruneWorker works conversa.event_prune, in batches.
type EventPruneWorker struct {
	river.WorkerDefaults[EventPruneArgs]
	db DB
}

// NewEventPruneWorker builds the conversa.event_prune worker.
func NewEventPruneWorker(d Deps) *EventPruneWorker { return &EventPruneWorker{db: d.DB} }

// Work deletes old events until none is left.
func (w *EventPruneWorker) Work(ctx context.Context, _ *river.Job[EventPruneArgs]) error {
	for {
		n, err := store.PruneEvents(ctx, w.db, 5000)
		if err != nil || n < 5000 {
			return err
		}
	}
}
