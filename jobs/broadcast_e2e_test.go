package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twilio"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook"
)

// broadcastWorld is the pipeline on a database of the test's own: the HTTP
// edge (with an insert-only River client), the fake Twilio posting status
// callbacks back to it, and a River client working sends and broadcasts
// that a test can stop hard and replace.
type broadcastWorld struct {
	t       *testing.T
	ctx     context.Context
	pool    *pgxpool.Pool
	edge    string
	admin   string
	ten     testdb.Tenant
	fake    *faketwilio.Fake
	tw      *twilio.Client
	logger  *slog.Logger
	workers *river.Client[pgx.Tx]
}

func newBroadcastWorld(t *testing.T, sendWorkers int) *broadcastWorld {
	t.Helper()
	ctx := context.Background()
	w := &broadcastWorld{t: t, ctx: ctx, admin: "admin-" + testdb.Unique(), logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	cfg, err := pgxpool.ParseConfig(testdb.OwnURL(t))
	require.NoError(t, err)
	cfg.MaxConns = int32(sendWorkers + 20)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	w.pool = pool
	w.fake = faketwilio.New(faketwilio.Options{CallbackDelay: 5 * time.Millisecond})
	apiURL, err := w.fake.Start()
	require.NoError(t, err)
	t.Cleanup(w.fake.Close)
	w.tw, err = twilio.New(apiURL, 2*time.Second)
	require.NoError(t, err)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	w.edge = "http://" + ln.Addr().String()
	inserter, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: w.logger,
		Middleware: []rivertype.Middleware{&jobargs.ShortDelayMiddleware{MaxDelay: 5 * time.Second, Now: time.Now}}})
	require.NoError(t, err)
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: webhook.NewHandler(webhook.Deps{
		DB: pool, River: inserter, Sealer: testdb.Sealer(t), Logger: w.logger, PublicBaseURL: w.edge, AdminToken: w.admin,
		ToolsAllowPrivate: true,
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	w.ten = testdb.NewTenant(t, pool, 0)
	w.fake.AddAccount(w.ten.AccountSID, w.ten.AuthToken)
	w.startWorkers(sendWorkers)
	t.Cleanup(func() { w.stopWorkers(false) })
	return w
}

// startWorkers starts a River client working sends and broadcasts.
func (w *broadcastWorld) startWorkers(sendWorkers int) {
	w.t.Helper()
	d := jobs.Deps{DB: w.pool, Logger: w.logger, PublicBaseURL: w.edge, Sealer: testdb.Sealer(w.t), Twilio: w.tw}
	workers := river.NewWorkers()
	river.AddWorker(workers, jobs.NewSendWorker(d))
	bw := jobs.NewBroadcastWorker(d)
	bw.SetCheckEvery(100 * time.Millisecond)
	river.AddWorker(workers, bw)
	quick := func(n int) river.QueueConfig {
		return river.QueueConfig{MaxWorkers: n, FetchCooldown: 2 * time.Millisecond, FetchPollInterval: 50 * time.Millisecond}
	}
	rc, err := river.NewClient(riverpgxv5.New(w.pool), &river.Config{
		Logger: w.logger, Workers: workers,
		Queues:               map[string]river.QueueConfig{jobargs.QueueSend: quick(sendWorkers), jobargs.QueueMaintenance: quick(2)},
		Middleware:           []rivertype.Middleware{&jobargs.ShortDelayMiddleware{MaxDelay: 5 * time.Second, Now: time.Now}},
		JobTimeout:           5 * time.Second,
		RescueStuckJobsAfter: 6 * time.Second,
	})
	require.NoError(w.t, err)
	require.NoError(w.t, rc.Start(w.ctx))
	w.workers = rc
}

// stopWorkers stops the working client; hard cancels the jobs it is
// running, as a killed process leaves them.
func (w *broadcastWorld) stopWorkers(hard bool) {
	if w.workers == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if hard {
		// Like a killed process, it does not wait for its jobs to end: what
		// they do from now on fails on their cancelled context, and River's
		// rescuer finds them still running.
		ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_ = w.workers.StopAndCancel(ctx)
	} else {
		_ = w.workers.Stop(ctx)
	}
	w.workers = nil
}

// post sends a broadcast with the tenant's key and decodes the answer.
func (w *broadcastWorld) post(body map[string]any) (int, map[string]any) {
	w.t.Helper()
	return w.call(http.MethodPost, "/api/v1/tenants/"+w.ten.ID+"/broadcasts", body)
}

// call calls the API with the tenant's key and decodes the answer.
func (w *broadcastWorld) call(method, path string, body map[string]any) (int, map[string]any) {
	w.t.Helper()
	b, err := json.Marshal(body)
	require.NoError(w.t, err)
	req, err := http.NewRequest(method, w.edge+path, strings.NewReader(string(b)))
	require.NoError(w.t, err)
	req.Header.Set("Authorization", "Bearer "+w.ten.APIKey)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(w.t, err)
	defer resp.Body.Close()
	var out map[string]any
	require.NoError(w.t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out
}

type finishedBroadcast struct {
	Recipients int                         `json:"recipients"`
	Queued     int                         `json:"queued"`
	Counts     map[store.MessageStatus]int `json:"counts"`
	FinishedAt *time.Time                  `json:"finished_at"`
}

// waitFinished polls GET /broadcasts/:id until finished_at is set.
func (w *broadcastWorld) waitFinished(id int64, within time.Duration) finishedBroadcast {
	w.t.Helper()
	var v finishedBroadcast
	require.Eventually(w.t, func() bool {
		req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/v1/broadcasts/%d", w.edge, id), nil)
		require.NoError(w.t, err)
		req.Header.Set("Authorization", "Bearer "+w.ten.APIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		v = finishedBroadcast{}
		return json.NewDecoder(resp.Body).Decode(&v) == nil && v.FinishedAt != nil
	}, within, 50*time.Millisecond, "broadcast %d never finished: %+v", id, v)
	return v
}

// TestBroadcastEndToEnd: a WhatsApp template broadcast through the API, the
// send workers and the fake Twilio's status callbacks: every recipient gets
// exactly one message, sent as the template with its variables (outside the
// 24 h window: none of them ever wrote), the opted-out contact none; the
// broadcast then finishes with every message delivered.
func TestBroadcastEndToEnd(t *testing.T) {
	t.Parallel()
	w := newBroadcastWorld(t, 8)
	_, err := w.pool.Exec(w.ctx, `UPDATE channels SET rate_per_second = 200 WHERE tenant_id = $1`, w.ten.ID)
	require.NoError(t, err)
	optedOut := "whatsapp:" + testdb.PhoneNumber()
	_, err = w.pool.Exec(w.ctx, `INSERT INTO contacts (tenant_id, address, opted_out, opted_out_at) VALUES ($1, $2, true, now())`, w.ten.ID, optedOut)
	require.NoError(t, err)
	// An endpoint for broadcast.finished, so the event is recorded (its
	// delivery is the event webhooks' business, tested with them).
	status, out := w.call(http.MethodPut, "/api/v1/tenants/"+w.ten.ID+"/webhooks/ops",
		map[string]any{"url": "http://127.0.0.1:9/hook", "events": []string{store.EventBroadcastFinished}})
	require.Equal(t, http.StatusCreated, status, "%v", out)
	to := make([]string, 30)
	for i := range to {
		to[i] = fmt.Sprintf("+1777%03d%04d", i, time.Now().UnixNano()%10000)
	}
	status, out = w.post(map[string]any{"from": w.ten.WhatsApp, "content_sid": "HXappointment", "name": "reminders",
		"content_variables": map[string]string{"1": "Friday 10:00"}, "to": append(append([]string{}, to...), optedOut, "0800-PIZZA")})
	require.Equal(t, http.StatusAccepted, status, "%v", out)
	require.EqualValues(t, 32, out["recipients"])
	require.EqualValues(t, 30, out["queued"])
	require.EqualValues(t, 1, out["skipped_opted_out"])
	require.Equal(t, []any{"0800-PIZZA"}, out["invalid"])

	id := int64(out["id"].(float64))
	v := w.waitFinished(id, 30*time.Second)
	require.Equal(t, map[store.MessageStatus]int{store.StatusDelivered: 30}, v.Counts)
	var data string
	require.NoError(t, w.pool.QueryRow(w.ctx, `SELECT data::text FROM events WHERE tenant_id = $1 AND type = $2`,
		w.ten.ID, store.EventBroadcastFinished).Scan(&data))
	require.JSONEq(t, fmt.Sprintf(`{"broadcast_id": %d, "counts": {"delivered": 30}}`, id), data, "one broadcast.finished event")
	for _, n := range to {
		got := w.fake.Accepted("whatsapp:" + n)
		require.Len(t, got, 1, "exactly one message to %s", n)
		require.Equal(t, w.ten.WhatsApp, got[0].From)
		require.Equal(t, "HXappointment", got[0].ContentSID)
		require.JSONEq(t, `{"1": "Friday 10:00"}`, got[0].ContentVariables)
	}
	require.Empty(t, w.fake.Accepted(optedOut), "the opted-out contact gets nothing")
}

// TestBroadcastSurvivesAWorkerKill stops the working River client hard in
// the middle of a broadcast and starts a new one: the broadcast finishes,
// and Twilio got exactly one message per recipient (a send whose outcome
// the kill left unknown is looked up, not resent).
func TestBroadcastSurvivesAWorkerKill(t *testing.T) {
	t.Parallel()
	w := newBroadcastWorld(t, 8)
	_, err := w.pool.Exec(w.ctx, `UPDATE channels SET rate_per_second = 100 WHERE tenant_id = $1`, w.ten.ID)
	require.NoError(t, err)
	to := make([]string, 300)
	for i := range to {
		to[i] = fmt.Sprintf("+1888%03d%04d", i, time.Now().UnixNano()%10000)
	}
	// Around the kill, Twilio takes some messages and then holds its
	// answer: the kill finds those sends inside their call to Twilio.
	for _, n := range to[90:110] {
		w.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultAcceptThenHang, To: "whatsapp:" + n})
	}
	status, out := w.post(map[string]any{"from": w.ten.WhatsApp, "content_sid": "HXnews", "to": to})
	require.Equal(t, http.StatusAccepted, status, "%v", out)
	require.Eventually(t, func() bool { return w.fake.Requests() >= 100 }, 20*time.Second, 5*time.Millisecond)
	w.stopWorkers(true)
	stoppedAt := w.fake.Requests()
	require.Less(t, stoppedAt, 300, "stopped mid-way")
	w.startWorkers(8)

	v := w.waitFinished(int64(out["id"].(float64)), 60*time.Second)
	require.Equal(t, map[store.MessageStatus]int{store.StatusDelivered: 300}, v.Counts)
	for _, n := range to {
		require.Len(t, w.fake.Accepted("whatsapp:"+n), 1, "exactly one message to %s", n)
	}
	// How the SIDs of the sends the kill interrupted were recorded: by a
	// look-up in Twilio's list, or by the status callback that came first.
	var interrupted, found int
	require.NoError(t, w.pool.QueryRow(w.ctx, `
		SELECT (SELECT count(*) FROM river_job WHERE kind = 'conversa.send' AND attempt > 1),
		       (SELECT count(*) FROM message_events WHERE kind = 'send.accepted' AND detail->>'how' IN ('lookup', 'status_callback'))`).
		Scan(&interrupted, &found))
	t.Logf("stopped after %d create requests; %d sends ran again after the kill; %d SIDs found without a resend", stoppedAt, interrupted, found)
	require.Positive(t, interrupted, "the kill interrupted sends")
	require.Positive(t, found, "the kill left sends whose outcome was unknown")
}

// TestBroadcastMeasure (BROADCAST_MEASURE=1) measures a 10,000-recipient
// WhatsApp broadcast at the default 80/s with 40 send workers: time to
// create (the POST's answer), time to drain (every message final) and the
// process's memory. It reports numbers and asserts only correctness.
func TestBroadcastMeasure(t *testing.T) {
	if os.Getenv("BROADCAST_MEASURE") == "" {
		t.Skip("set BROADCAST_MEASURE=1 to measure a 10,000-recipient broadcast")
	}
	const n = 10_000
	w := newBroadcastWorld(t, 40)
	to := make([]string, n)
	for i := range to {
		to[i] = fmt.Sprintf("+1999%07d", i)
	}
	var peakHeap, peakSys atomic.Uint64
	stop := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakHeap.Load() {
				peakHeap.Store(ms.HeapInuse)
			}
			if ms.Sys > peakSys.Load() {
				peakSys.Store(ms.Sys)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	status, out := w.post(map[string]any{"from": w.ten.WhatsApp, "content_sid": "HXmeasure", "to": to})
	created := time.Since(start)
	require.Equal(t, http.StatusAccepted, status, "%v", out)
	createHeap := peakHeap.Load()
	v := w.waitFinished(int64(out["id"].(float64)), 10*time.Minute)
	drained := time.Since(start)
	close(stop)
	require.Equal(t, map[store.MessageStatus]int{store.StatusDelivered: n}, v.Counts)
	accepted := w.fake.Accepted("")
	first, last := accepted[0].Created, accepted[0].Created
	for _, m := range accepted {
		first, last = minTime(first, m.Created), maxTime(last, m.Created)
	}
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	t.Logf("broadcast of %d: POST answered in %s; all final after %s; Twilio accepted %d over %s (%.1f/s); "+
		"peak HeapInuse %.1f MiB during creation, %.1f MiB overall; peak Sys %.1f MiB; MaxRSS %.1f MiB (test process: edge, workers and fake Twilio)",
		n, created.Round(time.Millisecond), drained.Round(time.Millisecond), len(accepted), last.Sub(first).Round(time.Millisecond),
		float64(len(accepted)-1)/last.Sub(first).Seconds(), float64(createHeap)/(1<<20), float64(peakHeap.Load())/(1<<20),
		float64(peakSys.Load())/(1<<20), float64(ru.Maxrss)/(1<<10))
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
