package jobs_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twilio"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/store"
)

// reconcileEnv is a sendEnv whose fake Twilio moves every message to its
// final status but loses every status callback, plus the reconcile worker.
type reconcileEnv struct {
	*sendEnv
	reconciler *rivertest.Worker[jobs.ReconcileArgs, pgx.Tx]
}

func newReconcileEnv(t *testing.T) *reconcileEnv {
	t.Helper()
	e := newSendEnv(t, envOpts{fakeOpts: faketwilio.Options{CallbackDelay: time.Millisecond, CallbackLoss: 1}})
	tw, err := twilio.New(e.fake.URL(), 2*time.Second)
	require.NoError(t, err)
	w := jobs.NewReconcileWorker(jobs.Deps{
		DB: e.db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Sealer: testdb.Sealer(t), Twilio: tw,
		ReconcileAfter: 10 * time.Minute,
	})
	return &reconcileEnv{sendEnv: e, reconciler: rivertest.NewWorker(t, riverpgxv5.New(nil), &river.Config{}, w)}
}

// sent sends one reply to a new contact and waits until the fake has moved
// it to its last status (whose callback it lost).
func (e *reconcileEnv) sent(t *testing.T, fault *faketwilio.Fault) (id int64, sid string) {
	t.Helper()
	contact := "whatsapp:" + testdb.PhoneNumber()
	if fault != nil {
		fault.To = contact
		e.fake.Inject(*fault)
	}
	id = e.outbound(t, e.conversation(t, e.ten.WhatsApp, contact), "Your order shipped.")
	res := e.work(t, e.tx(t), id, nil)
	require.Equal(t, river.EventKindJobCompleted, res.EventKind)
	require.Eventually(t, func() bool {
		acc := e.fake.Accepted(contact)
		return len(acc) == 1 && acc[0].Status != "queued" && (acc[0].Status != "sent" || (fault != nil && fault.Kind == faketwilio.FaultNoFinalStatus))
	}, 5*time.Second, 5*time.Millisecond)
	return id, e.fake.Accepted(contact)[0].SID
}

// age makes Twilio's acceptance of a message d old.
func (e *reconcileEnv) age(t *testing.T, id int64, d time.Duration) {
	t.Helper()
	_, err := e.db.Exec(context.Background(), `UPDATE messages SET accepted_at = now() - $2::float8 * interval '1 second' WHERE id = $1`, id, d.Seconds())
	require.NoError(t, err)
}

// reconcile runs the job until it leaves nothing due (the pace may defer some).
func (e *reconcileEnv) reconcile(t *testing.T) {
	t.Helper()
	for i := 0; i < 5; i++ {
		_, err := e.reconciler.Work(context.Background(), t, e.tx(t), jobs.ReconcileArgs{}, nil)
		require.NoError(t, err)
		due, err := store.ReconcileCandidates(context.Background(), e.db, 10*time.Minute, 100)
		require.NoError(t, err)
		if len(due) == 0 {
			return
		}
	}
	t.Fatal("reconciliation left messages due")
}

func (e *reconcileEnv) unfinished(t *testing.T) int {
	t.Helper()
	n, err := store.UnfinishedReplies(context.Background(), e.db, store.TenantScope(e.ten.ID))
	require.NoError(t, err)
	return n
}

// lastReconciled is the detail of a message's last status.reconciled event.
func (e *reconcileEnv) lastReconciled(t *testing.T, id int64) map[string]any {
	t.Helper()
	var raw []byte
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT detail FROM message_events
		WHERE message_id = $1 AND kind = 'status.reconciled' ORDER BY seq DESC LIMIT 1`, id).Scan(&raw))
	var d map[string]any
	require.NoError(t, json.Unmarshal(raw, &d))
	return d
}

func TestReconcileSettlesRepliesWhoseCallbacksWereLost(t *testing.T) {
	t.Parallel()
	e := newReconcileEnv(t)
	var ids []int64
	for i := 0; i < 12; i++ {
		id, _ := e.sent(t, nil)
		ids = append(ids, id)
	}
	failedID, _ := e.sent(t, &faketwilio.Fault{Kind: faketwilio.FaultUndelivered, Code: 30003})
	stopID, _ := e.sent(t, &faketwilio.Fault{Kind: faketwilio.FaultUndelivered, Code: 21610})
	fresh, _ := e.sent(t, nil) // accepted just now: not due yet
	for _, id := range append(append([]int64{}, ids...), failedID, stopID) {
		require.Equal(t, store.StatusQueued, e.message(t, id).Status, "every callback was lost")
		e.age(t, id, 11*time.Minute)
	}
	before := e.unfinished(t)
	require.Equal(t, 15, before)
	creditsBefore := e.credits(t)

	e.reconcile(t)

	t.Logf("replies with no final status: %d before reconciliation, %d after (1 not yet due)", before, e.unfinished(t))
	require.Equal(t, 1, e.unfinished(t))
	for _, id := range ids {
		m := e.message(t, id)
		require.Equal(t, store.StatusDelivered, m.Status)
		d := e.lastReconciled(t, id)
		require.Equal(t, "delivered", d["status"])
		require.Equal(t, true, d["applied"])
	}
	require.Equal(t, store.StatusQueued, e.message(t, fresh).Status)
	f := e.message(t, failedID)
	require.Equal(t, store.StatusUndelivered, f.Status)
	require.Equal(t, "30003", *f.ErrorCode)
	require.Equal(t, creditsBefore+2, e.credits(t), "both failures refunded, once")
	var optedOut bool
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT ct.opted_out FROM messages m
		JOIN conversations c ON c.id = m.conversation_id JOIN contacts ct ON ct.id = c.contact_id WHERE m.id = $1`, stopID).Scan(&optedOut))
	require.True(t, optedOut, "21610 opts the contact out, as a callback does")

	// A lost callback that arrives after all changes nothing: it is a duplicate.
	fresh2, err := store.RecordStatusCallback(context.Background(), e.db, *e.message(t, ids[0]).TwilioSID, "delivered")
	require.NoError(t, err)
	require.False(t, fresh2)
}

func TestReconcileClassifiesNotFoundAndUnauthorized(t *testing.T) {
	t.Parallel()
	e := newReconcileEnv(t)
	gone, goneSID := e.sent(t, nil)
	e.fake.Delete(goneSID)
	e.age(t, gone, 11*time.Minute)

	e.reconcile(t)
	m := e.message(t, gone)
	require.Equal(t, store.StatusQueued, m.Status)
	require.Equal(t, store.ReasonNoFinalStatus, *m.ErrorReason, "404: nothing more will ever be known")
	d := e.lastReconciled(t, gone)
	require.Equal(t, "gave_up", d["outcome"])
	require.Equal(t, twilio.FetchNotFound, d["last_class"])
	require.Equal(t, 0, e.unfinished(t))

	// The account's token was rotated at Twilio: 401, recorded, not retried at once.
	locked, _ := e.sent(t, nil)
	e.fake.AddAccount(e.ten.AccountSID, "rotated"+testdb.Unique())
	e.age(t, locked, 11*time.Minute)
	e.reconcile(t)
	require.Equal(t, twilio.FetchUnauthorized, e.lastReconciled(t, locked)["class"])
	require.Nil(t, e.message(t, locked).ErrorReason)
	var next time.Time
	var checks int
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT checks, next_check_at FROM reconcile_checks WHERE message_id = $1`, locked).Scan(&checks, &next))
	require.Equal(t, 1, checks, "one look-up, then it waits")
	require.True(t, next.After(time.Now().Add(50*time.Minute)), "a 401 waits at least an hour: %s", next)
}

func TestReconcileGivesUpAfter48Hours(t *testing.T) {
	t.Parallel()
	e := newReconcileEnv(t)
	id, _ := e.sent(t, &faketwilio.Fault{Kind: faketwilio.FaultNoFinalStatus})
	e.age(t, id, 11*time.Minute)

	e.reconcile(t)
	require.Equal(t, store.StatusSent, e.message(t, id).Status, "Twilio says sent: applied")
	require.Equal(t, 1, e.unfinished(t))
	due, err := store.ReconcileCandidates(context.Background(), e.db, 10*time.Minute, 100)
	require.NoError(t, err)
	require.Empty(t, due, "looked up again later, not at every run")

	e.age(t, id, 49*time.Hour)
	_, err = e.db.Exec(context.Background(), `UPDATE reconcile_checks SET next_check_at = now() WHERE message_id = $1`, id)
	require.NoError(t, err)
	e.reconcile(t)
	m := e.message(t, id)
	require.Equal(t, store.StatusSent, m.Status)
	require.Equal(t, store.ReasonNoFinalStatus, *m.ErrorReason)
	require.Equal(t, "gave_up", e.lastReconciled(t, id)["outcome"])
	require.Equal(t, 0, e.unfinished(t))
}

func TestReconcileInterval(t *testing.T) {
	t.Parallel()
	require.Equal(t, time.Minute, jobs.ReconcileInterval(10*time.Minute))
	require.Equal(t, 5*time.Second, jobs.ReconcileInterval(10*time.Second))
	require.Equal(t, time.Minute, jobs.ReconcileInterval(0))
}
