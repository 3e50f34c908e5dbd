package jobs_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twilio"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// sendEnv is one test's world: a tenant on a fake Twilio, and the send worker.
type sendEnv struct {
	db     jobs.DB
	fake   *faketwilio.Fake
	ten    testdb.Tenant
	worker *rivertest.Worker[jobargs.SendArgs, pgx.Tx]
}

type envOpts struct {
	db       jobs.DB // default: the test's transaction
	redis    *redis.Client
	apiURL   string // default: the fake's URL
	timeout  time.Duration
	fakeOpts faketwilio.Options
	// publicBaseURL is where status callbacks go (default: nowhere).
	publicBaseURL string
}

func newSendEnv(t testing.TB, o envOpts) *sendEnv {
	t.Helper()
	if o.db == nil {
		o.db = testdb.Tx(t)
	}
	if o.publicBaseURL == "" {
		o.publicBaseURL = "http://127.0.0.1:1"
	}
	if o.timeout == 0 {
		o.timeout = 400 * time.Millisecond
	}
	o.fakeOpts.NoCallbacks = o.fakeOpts.NoCallbacks || o.fakeOpts.CallbackDelay == 0
	fake := faketwilio.New(o.fakeOpts)
	u, err := fake.Start()
	require.NoError(t, err)
	t.Cleanup(fake.Close)
	if o.apiURL == "" {
		o.apiURL = u
	}
	ten := testdb.NewTenant(t, o.db, 10)
	fake.AddAccount(ten.AccountSID, ten.AuthToken)
	tw, err := twilio.New(o.apiURL, o.timeout)
	require.NoError(t, err)
	w := jobs.NewSendWorker(jobs.Deps{
		DB:            o.db,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		Redis:         o.redis,
		PublicBaseURL: o.publicBaseURL,
		Sealer:        testdb.Sealer(t),
		Twilio:        tw,
	})
	return &sendEnv{
		db:     o.db,
		fake:   fake,
		ten:    ten,
		worker: rivertest.NewWorker(t, riverpgxv5.New(nil), &river.Config{}, w),
	}
}

// conversation opens a conversation from contact to one of the tenant's numbers.
func (e *sendEnv) conversation(t testing.TB, number, contact string) int64 {
	t.Helper()
	ctx := context.Background()
	ch, err := store.ChannelByAddress(ctx, e.db, number)
	require.NoError(t, err)
	res, err := store.InsertInbound(ctx, e.db, store.Inbound{
		TenantID: e.ten.ID, ChannelID: ch.ID, From: contact, MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "hi",
	})
	require.NoError(t, err)
	return res.ConversationID
}

// outbound writes a pending reply in a conversation, reserving one credit.
func (e *sendEnv) outbound(t testing.TB, convID int64, body string) int64 {
	t.Helper()
	id, err := store.InsertOutbound(context.Background(), e.db, store.Outbound{
		TenantID: e.ten.ID, ConversationID: convID, Author: "bot", Body: body, CreditsReserved: 1,
	})
	require.NoError(t, err)
	return id
}

func (e *sendEnv) message(t testing.TB, id int64) store.Message {
	t.Helper()
	m, err := store.GetMessage(context.Background(), e.db, e.ten.ID, id)
	require.NoError(t, err)
	return m
}

func (e *sendEnv) credits(t testing.TB) int64 {
	t.Helper()
	ten, err := store.GetTenant(context.Background(), e.db, e.ten.ID)
	require.NoError(t, err)
	return ten.Credits
}

func (e *sendEnv) events(t testing.TB, id int64) []string {
	t.Helper()
	rows, err := e.db.Query(context.Background(), `SELECT kind FROM message_events WHERE message_id = $1 ORDER BY id`, id)
	require.NoError(t, err)
	kinds, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return kinds
}

func (e *sendEnv) work(t testing.TB, tx pgx.Tx, id int64, opts *river.InsertOpts) *rivertest.WorkResult {
	t.Helper()
	res, err := e.worker.Work(context.Background(), t, tx, jobargs.SendArgs{TenantID: e.ten.ID, MessageID: id}, opts)
	return checkWork(t, res, err)
}

// again works a job's next attempt.
func (e *sendEnv) again(t testing.TB, res *rivertest.WorkResult) *rivertest.WorkResult {
	t.Helper()
	res, err := e.worker.WorkJob(context.Background(), t, e.tx(t), res.Job)
	return checkWork(t, res, err)
}

// checkWork allows the error of an attempt that will be retried.
func checkWork(t testing.TB, res *rivertest.WorkResult, err error) *rivertest.WorkResult {
	t.Helper()
	require.NotNil(t, res, "work: %v", err)
	if res.EventKind != river.EventKindJobFailed {
		require.NoError(t, err)
	}
	return res
}

func (e *sendEnv) tx(t testing.TB) pgx.Tx {
	tx, ok := e.db.(pgx.Tx)
	require.True(t, ok)
	return tx
}

func TestSendDeliversOnce(t *testing.T) {
	t.Parallel()
	e := newSendEnv(t, envOpts{})
	contact := testdb.PhoneNumber()
	id := e.outbound(t, e.conversation(t, e.ten.SMS, contact), "Your table is booked.")

	res := e.work(t, e.tx(t), id, nil)
	require.Equal(t, river.EventKindJobCompleted, res.EventKind)

	got := e.fake.Accepted(contact)
	require.Len(t, got, 1)
	require.Equal(t, "Your table is booked.", got[0].Body)
	require.Equal(t, e.ten.SMS, got[0].From)
	require.Equal(t, "http://127.0.0.1:1/twilio/status?m="+strconv.FormatInt(id, 10), got[0].StatusCallback)
	m := e.message(t, id)
	require.NotNil(t, m.TwilioSID)
	require.Equal(t, got[0].SID, *m.TwilioSID)
	require.Equal(t, []string{"message.created", "send.attempt", "send.accepted"}, e.events(t, id))

	// A second run of the same job (a duplicate, a rescue) sends nothing.
	res = e.work(t, e.tx(t), id, nil)
	require.Equal(t, river.EventKindJobCompleted, res.EventKind)
	require.Len(t, e.fake.Accepted(contact), 1)
}

func TestSendPermanentErrorFailsAfterOneAttempt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code, status int
		reason       string
	}{
		{21211, 400, "invalid_to"},
		{21610, 400, "unsubscribed"},
		{21612, 400, "route_not_possible"},
		{21614, 400, "not_a_mobile_number"},
		{63003, 400, "not_a_whatsapp_user"},
		{63016, 400, "outside_whatsapp_window"},
		{20003, 401, "authentication_failed"},
		{21999, 400, "twilio_error_21999"},
	} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			t.Parallel()
			e := newSendEnv(t, envOpts{})
			contact := testdb.PhoneNumber()
			conv := e.conversation(t, e.ten.SMS, contact)
			id := e.outbound(t, conv, "hello")
			before := e.credits(t)
			e.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultError, Code: tc.code, Status: tc.status, Times: 5})

			res := e.work(t, e.tx(t), id, nil)
			require.Equal(t, river.EventKindJobCancelled, res.EventKind, "never retried")
			require.Equal(t, 1, e.fake.Requests())
			require.Empty(t, e.fake.Accepted(""))

			m := e.message(t, id)
			require.Equal(t, store.StatusFailed, m.Status)
			require.Equal(t, strconv.Itoa(tc.code), *m.ErrorCode)
			require.Equal(t, tc.reason, *m.ErrorReason)
			require.Equal(t, before+1, e.credits(t), "refunded")

			conversation, err := store.GetConversation(context.Background(), e.db, e.ten.ID, conv)
			require.NoError(t, err)
			var optedOut bool
			require.NoError(t, e.db.QueryRow(context.Background(), `SELECT opted_out FROM contacts WHERE id = $1`, conversation.ContactID).Scan(&optedOut))
			require.Equal(t, tc.code == 21610, optedOut, "21610 opts the contact out")
		})
	}
}

func TestSendRetriesWhenTwilioDidNotTakeIt(t *testing.T) {
	t.Parallel()
	t.Run("429", func(t *testing.T) {
		t.Parallel()
		e := newSendEnv(t, envOpts{})
		contact := testdb.PhoneNumber()
		id := e.outbound(t, e.conversation(t, e.ten.SMS, contact), "hello")
		e.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultRateLimit, Times: 2})

		res := e.work(t, e.tx(t), id, nil)
		require.Equal(t, river.EventKindJobFailed, res.EventKind, "retried with backoff")
		require.Equal(t, store.StatusPending, e.message(t, id).Status)
		res = e.again(t, res)
		require.Equal(t, river.EventKindJobFailed, res.EventKind)
		res = e.again(t, res)
		require.Equal(t, river.EventKindJobCompleted, res.EventKind)

		require.Equal(t, 3, e.fake.Requests())
		require.Len(t, e.fake.Accepted(contact), 1)
		require.NotNil(t, e.message(t, id).TwilioSID)
	})
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		e := newSendEnv(t, envOpts{apiURL: "http://127.0.0.1:1"})
		id := e.outbound(t, e.conversation(t, e.ten.SMS, testdb.PhoneNumber()), "hello")
		res := e.work(t, e.tx(t), id, nil)
		require.Equal(t, river.EventKindJobFailed, res.EventKind)
		require.Equal(t, store.StatusPending, e.message(t, id).Status, "nothing reached Twilio: no look-up needed")
	})
	t.Run("gives up on the last attempt", func(t *testing.T) {
		t.Parallel()
		e := newSendEnv(t, envOpts{})
		id := e.outbound(t, e.conversation(t, e.ten.SMS, testdb.PhoneNumber()), "hello")
		before := e.credits(t)
		e.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultRateLimit, Times: 10})

		res := e.work(t, e.tx(t), id, &river.InsertOpts{MaxAttempts: 2})
		require.Equal(t, river.EventKindJobFailed, res.EventKind)
		res = e.again(t, res)
		require.Equal(t, river.EventKindJobCancelled, res.EventKind)

		m := e.message(t, id)
		require.Equal(t, store.StatusFailed, m.Status)
		require.Equal(t, "20429", *m.ErrorCode)
		require.Equal(t, "gave_up_too_many_requests", *m.ErrorReason)
		require.Equal(t, before+1, e.credits(t))
	})
}

func TestSendAmbiguousOutcomeDeliversExactlyOneCopy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		kind  faketwilio.FaultKind
		found bool // the first attempt did create the message
	}{
		{"accepted then response lost (timeout)", faketwilio.FaultAcceptThenHang, true},
		{"accepted then connection dropped", faketwilio.FaultAcceptThenDrop, true},
		{"hang before accepting", faketwilio.FaultHang, false},
		{"500", faketwilio.FaultServerError, false},
		{"502 html", faketwilio.FaultBadGateway, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newSendEnv(t, envOpts{})
			contact := testdb.PhoneNumber()
			conv := e.conversation(t, e.ten.SMS, contact)
			// An earlier, delivered message with the same body must not be taken for this one.
			earlier := e.outbound(t, conv, "same words")
			require.Equal(t, river.EventKindJobCompleted, e.work(t, e.tx(t), earlier, nil).EventKind)
			id := e.outbound(t, conv, "same words")
			e.fake.Inject(faketwilio.Fault{Kind: tc.kind})

			res := e.work(t, e.tx(t), id, nil)
			require.Equal(t, river.EventKindJobFailed, res.EventKind)
			m := e.message(t, id)
			require.Equal(t, store.StatusClaimed, m.Status)
			require.Nil(t, m.TwilioSID)

			res = e.again(t, res)
			require.Equal(t, river.EventKindJobCompleted, res.EventKind)

			got := e.fake.Accepted(contact)
			require.Len(t, got, 2, "the earlier message and exactly one copy of this one")
			m = e.message(t, id)
			require.NotNil(t, m.TwilioSID)
			require.Equal(t, got[1].SID, *m.TwilioSID)
			require.Contains(t, e.events(t, id), "send.ambiguous")
			if !tc.found {
				require.Contains(t, e.events(t, id), "send.lookup", "looked, found none, sent")
			}
			wantRequests := 3 // the earlier message, the faulted attempt, the resend
			if tc.found {
				wantRequests = 2 // found by the look-up: no resend
			}
			require.Equal(t, wantRequests, e.fake.Requests())
		})
	}
}

func TestSendToOptedOutContactSendsNothing(t *testing.T) {
	t.Parallel()
	e := newSendEnv(t, envOpts{})
	contact := testdb.PhoneNumber()
	conv := e.conversation(t, e.ten.SMS, contact)
	id := e.outbound(t, conv, "hello")
	// The contact writes STOP before the send runs.
	ch, err := store.ChannelByAddress(context.Background(), e.db, e.ten.SMS)
	require.NoError(t, err)
	stop := true
	_, err = store.InsertInbound(context.Background(), e.db, store.Inbound{
		TenantID: e.ten.ID, ChannelID: ch.ID, From: contact, MessageSID: "SM" + testdb.Unique(), Body: "STOP", OptOut: &stop,
	})
	require.NoError(t, err)
	before := e.credits(t)

	res := e.work(t, e.tx(t), id, nil)
	require.Equal(t, river.EventKindJobCompleted, res.EventKind)
	require.Equal(t, 0, e.fake.Requests())
	m := e.message(t, id)
	require.Equal(t, store.StatusFailed, m.Status)
	require.Equal(t, "opted_out", *m.ErrorReason)
	require.Equal(t, before+1, e.credits(t))
}

func TestSendOutsideWhatsAppWindow(t *testing.T) {
	t.Parallel()
	expire := func(t *testing.T, e *sendEnv, conv int64) {
		_, err := e.db.Exec(context.Background(), `UPDATE conversations SET last_inbound_at = now() - interval '25 hours' WHERE id = $1`, conv)
		require.NoError(t, err)
	}
	t.Run("without a template the message fails", func(t *testing.T) {
		t.Parallel()
		e := newSendEnv(t, envOpts{})
		conv := e.conversation(t, e.ten.WhatsApp, "whatsapp:"+testdb.PhoneNumber())
		id := e.outbound(t, conv, "late answer")
		expire(t, e, conv)

		res := e.work(t, e.tx(t), id, nil)
		require.Equal(t, river.EventKindJobCompleted, res.EventKind)
		require.Equal(t, 0, e.fake.Requests())
		m := e.message(t, id)
		require.Equal(t, store.StatusFailed, m.Status)
		require.Equal(t, "63016", *m.ErrorCode)
		require.Equal(t, "outside_whatsapp_window", *m.ErrorReason)
	})
	t.Run("with a template the template is sent", func(t *testing.T) {
		t.Parallel()
		e := newSendEnv(t, envOpts{})
		contact := "whatsapp:" + testdb.PhoneNumber()
		conv := e.conversation(t, e.ten.WhatsApp, contact)
		id := e.outbound(t, conv, "late answer")
		expire(t, e, conv)
		_, err := e.db.Exec(context.Background(), `UPDATE channels SET template_content_sid = 'HX0123', template_variables = '{"1":"Ada"}' WHERE address = $1`, e.ten.WhatsApp)
		require.NoError(t, err)

		res := e.work(t, e.tx(t), id, nil)
		require.Equal(t, river.EventKindJobCompleted, res.EventKind)
		got := e.fake.Accepted(contact)
		require.Len(t, got, 1)
		require.Equal(t, "HX0123", got[0].ContentSID)
		require.JSONEq(t, `{"1":"Ada"}`, got[0].ContentVariables)
		require.Empty(t, got[0].Body)
	})
	t.Run("inside the window free text is sent", func(t *testing.T) {
		t.Parallel()
		e := newSendEnv(t, envOpts{})
		contact := "whatsapp:" + testdb.PhoneNumber()
		id := e.outbound(t, e.conversation(t, e.ten.WhatsApp, contact), "quick answer")
		require.Equal(t, river.EventKindJobCompleted, e.work(t, e.tx(t), id, nil).EventKind)
		got := e.fake.Accepted(contact)
		require.Len(t, got, 1)
		require.Equal(t, "quick answer", got[0].Body)
	})
}

func TestSendRetryAfterCallbackRecordedTheSIDSendsNothing(t *testing.T) {
	t.Parallel()
	e := newSendEnv(t, envOpts{})
	contact := testdb.PhoneNumber()
	id := e.outbound(t, e.conversation(t, e.ten.SMS, contact), "hello")
	e.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultAcceptThenDrop})
	res := e.work(t, e.tx(t), id, nil)
	require.Equal(t, river.EventKindJobFailed, res.EventKind)
	accepted := e.fake.Accepted(contact)
	require.Len(t, accepted, 1)

	// Twilio's status callback (keyed by ?m=) arrives before the retry.
	_, err := store.ApplyStatus(context.Background(), e.db, store.StatusUpdate{
		TenantID: e.ten.ID, MessageID: id, MessageSID: accepted[0].SID, Status: "sent",
	})
	require.NoError(t, err)

	res = e.again(t, res)
	require.Equal(t, river.EventKindJobCompleted, res.EventKind)
	require.Equal(t, 1, e.fake.Requests(), "no look-up needed, no second send")
	require.Equal(t, store.StatusSent, e.message(t, id).Status)
}
