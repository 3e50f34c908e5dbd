package jobs_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook"
)

// TestDeliveryEndToEnd sends through the fake with faults and its status
// callbacks posted to the real status webhook: every message ends delivered,
// or failed/undelivered with a code, and the fake never accepts one message
// twice.
func TestDeliveryEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t)
	// The status webhook checks signatures against its PUBLIC_BASE_URL: its own address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	edgeURL := "http://" + ln.Addr().String()
	edge := &httptest.Server{Listener: ln, Config: &http.Server{Handler: webhook.NewHandler(webhook.Deps{
		DB: pool, Sealer: testdb.Sealer(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), PublicBaseURL: edgeURL,
	})}}
	edge.Start()
	t.Cleanup(edge.Close)
	e := newSendEnv(t, envOpts{db: pool, publicBaseURL: edgeURL, fakeOpts: faketwilio.Options{CallbackDelay: 5 * time.Millisecond}})
	_, err = pool.Exec(ctx, `UPDATE channels SET rate_per_second = 50 WHERE address = $1`, e.ten.SMS)
	require.NoError(t, err)

	faults := []struct {
		fault *faketwilio.Fault
		want  store.MessageStatus
		code  string
	}{
		{nil, store.StatusDelivered, ""},
		{&faketwilio.Fault{Kind: faketwilio.FaultAcceptThenDrop}, store.StatusDelivered, ""},
		{&faketwilio.Fault{Kind: faketwilio.FaultAcceptThenHang}, store.StatusDelivered, ""},
		{&faketwilio.Fault{Kind: faketwilio.FaultRateLimit, Times: 2}, store.StatusDelivered, ""},
		{&faketwilio.Fault{Kind: faketwilio.FaultServerError}, store.StatusDelivered, ""},
		{&faketwilio.Fault{Kind: faketwilio.FaultError, Code: 21211}, store.StatusFailed, "21211"},
		{&faketwilio.Fault{Kind: faketwilio.FaultUndelivered, Code: 30005}, store.StatusUndelivered, "30005"},
	}
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	ids := make([]int64, len(faults))
	contacts := make([]string, len(faults))
	for i, f := range faults {
		contacts[i] = testdb.PhoneNumber()
		ids[i] = e.outbound(t, e.conversation(t, e.ten.SMS, contacts[i]), "your order shipped")
		if f.fault != nil {
			f.fault.To = contacts[i]
			e.fake.Inject(*f.fault)
		}
		res := e.work(t, tx, ids[i], nil)
		for attempt := 1; res.EventKind == river.EventKindJobFailed && attempt < 5; attempt++ {
			r, err := e.worker.WorkJob(ctx, t, tx, res.Job)
			res = checkWork(t, r, err)
		}
		require.NotEqual(t, river.EventKindJobFailed, res.EventKind)
	}

	for i, f := range faults {
		var m store.Message
		require.Eventually(t, func() bool {
			m, err = store.GetMessage(ctx, pool, e.ten.ID, ids[i])
			return err == nil && m.Status == f.want
		}, 10*time.Second, 20*time.Millisecond, "message %d ends %s (is %s)", i, f.want, m.Status)
		if f.code != "" {
			require.Equal(t, f.code, *m.ErrorCode)
		}
		accepted := e.fake.Accepted(contacts[i])
		if f.want == store.StatusFailed {
			require.Empty(t, accepted)
			continue
		}
		require.Len(t, accepted, 1, "message %d: exactly one copy at Twilio", i)
		require.Equal(t, accepted[0].SID, *m.TwilioSID)
	}
}
