package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/conversa/conversa/internal/twilio"
	"github.com/conversa/conversa/store"
)

// DefaultReconcileAfter is RECONCILE_AFTER's default: how long after Twilio
// accepted a reply its final status may take before it is looked up.
const DefaultReconcileAfter = 10 * time.Minute

const (
	// reconcileBatch bounds one candidate query (and so the job's load on
	// Postgres per round).
	reconcileBatch = 100
	// reconcileBudget bounds one run; a backlog left over snoozes the job
	// for a second, so it carries on without waiting for the next period.
	// Kept below River's 15 s job timeout and 20 s stuck-job rescue.
	reconcileBudget = 10 * time.Second
	// reconcileRate is how many look-ups a second one Twilio account gets,
	// through the same pacer as sends (on its own key), so the backlog
	// after an outage does not trip Twilio's rate limit.
	reconcileRate = 10.0
	// maxCheckGap is the longest wait between two look-ups of one message.
	maxCheckGap = 6 * time.Hour
	// unauthorizedGap is the least wait after a 401: the token was rotated
	// or revoked, and only an operator (`account add`) can mend it.
	unauthorizedGap = time.Hour
)

// ReconcileArgs is the periodic reconciliation run (see ReconcileWorker).
type ReconcileArgs struct{}

// Kind is stable: never rename a shipped job kind.
func (ReconcileArgs) Kind() string { return "conversa.reconcile" }

// InsertOpts keeps one run at a time.
func (ReconcileArgs) InsertOpts() river.InsertOpts {
	return periodicOpts()
}

// ReconcileWorker works conversa.reconcile: it looks up at Twilio the
// replies accepted more than RECONCILE_AFTER ago that have no final status
// (their callbacks were lost), oldest first, in batches, paced per account,
// and records what Twilio says through the status callbacks' own path
// (store.RecordReconcile): the status moves forward only, a failure
// refunds, 21610 opts the contact out, and the trace gets a
// status.reconciled event. A message still unfinished at Twilio is looked
// up again later, each time twice as late (at most maxCheckGap apart); 48 h
// after acceptance it is given up with the reason no_final_status, and at
// once when Twilio answers 404. A 401 is recorded and waits an hour.
type ReconcileWorker struct {
	river.WorkerDefaults[ReconcileArgs]
	db      DB
	sealer  *store.Sealer
	twilio  *twilio.Client
	pacer   *Pacer
	after   time.Duration
	logger  *slog.Logger
	metrics *Metrics
	now     func() time.Time
}

// NewReconcileWorker builds the conversa.reconcile worker; d.Twilio and
// d.Sealer are required.
func NewReconcileWorker(d Deps) *ReconcileWorker {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	after := d.ReconcileAfter
	if after <= 0 {
		after = DefaultReconcileAfter
	}
	return &ReconcileWorker{
		db: d.DB, sealer: d.Sealer, twilio: d.Twilio, after: after, logger: d.Logger, metrics: d.Metrics, now: d.Now,
		pacer: d.pacer(),
	}
}

// Timeout leaves room for the last look-up of a run after its budget.
func (w *ReconcileWorker) Timeout(*river.Job[ReconcileArgs]) time.Duration {
	return reconcileBudget + w.twilio.Timeout() + 2*time.Second
}

// Work runs one reconciliation round.
func (w *ReconcileWorker) Work(ctx context.Context, _ *river.Job[ReconcileArgs]) error {
	deadline := w.now().Add(reconcileBudget)
	// Accounts that answered 401 or 429, or whose pace is taken, wait for
	// the next run.
	blocked := map[string]bool{}
	for {
		list, err := store.ReconcileCandidates(ctx, w.db, w.after, reconcileBatch)
		if err != nil {
			return err
		}
		done := 0
		for _, c := range list {
			if w.now().After(deadline) {
				return river.JobSnooze(time.Second)
			}
			if blocked[c.AccountSID] {
				continue
			}
			ok, err := w.reconcile(ctx, c, blocked)
			if err != nil {
				return err
			}
			if ok {
				done++
			}
		}
		if len(list) < reconcileBatch || done == 0 {
			return nil
		}
	}
}

// reconcile looks one candidate up and records the answer. It returns false
// when the account's pace had no slot (nothing was asked).
func (w *ReconcileWorker) reconcile(ctx context.Context, c store.ReconcileCandidate, blocked map[string]bool) (bool, error) {
	log := w.logger.With("tenant_id", c.TenantID, "message_id", c.MessageID, "message_sid", c.TwilioSID)
	wait, ok, err := w.pacer.Reserve(ctx, "fetch:"+c.AccountSID, reconcileRate)
	if err != nil {
		return false, fmt.Errorf("reconcile pace: %w", err)
	}
	if !ok {
		blocked[c.AccountSID] = true
		return false, nil
	}
	if wait > 0 {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(wait):
		}
	}
	token, err := w.sealer.Open(c.AuthTokenSealed)
	if err != nil {
		return false, fmt.Errorf("open auth token: %w", err)
	}
	fetched, ferr := w.twilio.Fetch(c.AccountSID, token, c.TwilioSID)
	r := w.report(c, fetched, ferr)
	if r.Class == twilio.FetchUnauthorized || r.Class == twilio.FetchRateLimited {
		blocked[c.AccountSID] = true
	}
	var res store.ReconcileResult
	err = inTx(ctx, w.db, func(tx pgx.Tx) error {
		var err error
		res, err = store.RecordReconcile(ctx, tx, r)
		return err
	})
	if err != nil {
		return false, err
	}
	outcome := r.Class
	switch {
	case res.GaveUp:
		outcome = "gave_up"
	case res.Applied:
		outcome = "applied"
	case r.Class == store.ReconcileFound:
		outcome = "unchanged"
	}
	w.metrics.Reconciled(outcome)
	log.Info("reconciled", "outcome", outcome, "twilio_status", r.Status, "class", r.Class, "checks", c.Checks+1)
	return true, nil
}

// report turns a look-up into what to record, and when to look again.
func (w *ReconcileWorker) report(c store.ReconcileCandidate, f twilio.Fetched, err error) store.ReconcileReport {
	now := w.now()
	r := store.ReconcileReport{Candidate: c, Class: store.ReconcileFound}
	if err != nil {
		r.Class, r.HTTPStatus = twilio.ClassifyFetch(err)
	} else {
		r.Status = f.Status
		if f.ErrorCode != 0 {
			r.ErrorCode = strconv.Itoa(f.ErrorCode)
		}
	}
	gap := min(w.after<<min(c.Checks, 16), maxCheckGap)
	if r.Class == twilio.FetchUnauthorized {
		gap = max(gap, unauthorizedGap)
	}
	giveUpAt := c.AcceptedAt.Add(store.ReconcileGiveUp)
	r.NextCheck = now.Add(gap)
	if r.NextCheck.After(giveUpAt) {
		r.NextCheck = giveUpAt
	}
	r.GiveUp = r.Class == twilio.FetchNotFound || !now.Before(giveUpAt)
	return r
}

// inTx runs f in a transaction of db and commits it.
func inTx(ctx context.Context, db DB, f func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	if err := f(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
