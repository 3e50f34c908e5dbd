package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/egress"
	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/media"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twilio"
	"github.com/conversa/conversa/internal/twilio/signature"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook"
)

// eventTestTimeout is how long a receiver has to answer an event in these
// tests (EventTimeout, 10 s, in a real process).
const eventTestTimeout = 500 * time.Millisecond

// erasureWorld is the whole pipeline on a database of the test's own: the
// HTTP edge, a River client working turns and sends, the fake Twilio
// posting status callbacks back, and memory in the real Redis.
type erasureWorld struct {
	t      *testing.T
	ctx    context.Context
	dbURL  string
	pool   *pgxpool.Pool
	rdb    *redis.Client
	mem    *store.Memory
	edge   string
	admin  string
	ten    testdb.Tenant
	fake   *faketwilio.Fake
	client *http.Client
	river  *river.Client[pgx.Tx]
}

func newErasureWorld(t *testing.T) *erasureWorld {
	t.Helper()
	ctx := context.Background()
	w := &erasureWorld{t: t, ctx: ctx, dbURL: testdb.OwnURL(t), admin: "admin-" + testdb.Unique(), client: &http.Client{Timeout: 10 * time.Second}}
	pool, err := pgxpool.New(ctx, w.dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	w.pool = pool
	w.rdb = testRedis(t)
	w.mem = testMemory(t, w.rdb)
	w.mem.Settle = 0 // cache every turn at once, so Redis holds the words to erase

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	w.fake = faketwilio.New(faketwilio.Options{CallbackDelay: 5 * time.Millisecond})
	apiURL, err := w.fake.Start()
	require.NoError(t, err)
	t.Cleanup(w.fake.Close)
	tw, err := twilio.New(apiURL, 2*time.Second)
	require.NoError(t, err)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	w.edge = "http://" + ln.Addr().String()
	workers := river.NewWorkers()
	require.NoError(t, jobs.AddWorkers(workers, jobs.Deps{
		DB: pool, Logger: logger, Memory: w.mem, Redis: w.rdb, PublicBaseURL: w.edge,
		Sealer: testdb.Sealer(t), Twilio: tw,
		Events: jobs.EventHTTP{Client: egress.NewClient(egress.Options{AllowPrivate: true, Timeout: eventTestTimeout}),
			Check: func(u string) error { return egress.CheckURL(u, true) }, Timeout: eventTestTimeout},
	}))
	quick := river.QueueConfig{MaxWorkers: 4, FetchCooldown: 5 * time.Millisecond, FetchPollInterval: 50 * time.Millisecond}
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Logger: logger, Workers: workers,
		Queues: map[string]river.QueueConfig{jobargs.QueueReply: quick, jobargs.QueueSend: quick,
			jobargs.QueueEvents: {MaxWorkers: 16, FetchCooldown: 5 * time.Millisecond, FetchPollInterval: 50 * time.Millisecond}},
		Middleware: []rivertype.Middleware{&jobargs.ShortDelayMiddleware{MaxDelay: 5 * time.Second, Now: time.Now}},
	})
	require.NoError(t, err)
	require.NoError(t, rc.Start(ctx))
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		(&jobs.EventRelay{DB: pool, River: rc, Logger: logger, Interval: 20 * time.Millisecond}).Run(relayCtx)
	}()
	t.Cleanup(func() {
		stopRelay()
		<-relayDone
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rc.Stop(stopCtx)
	})
	w.river = rc
	hosts, err := media.NewHosts(apiURL)
	require.NoError(t, err)
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: webhook.NewHandler(webhook.Deps{
		DB: pool, River: rc, Sealer: testdb.Sealer(t), Logger: logger, PublicBaseURL: w.edge,
		AdminToken: w.admin, Redis: w.rdb, Memory: w.mem, MediaHosts: hosts, ToolsAllowPrivate: true,
	})}}
	srv.Start()
	t.Cleanup(srv.Close)

	w.ten = testdb.NewTenant(t, pool, 100)
	w.fake.AddAccount(w.ten.AccountSID, w.ten.AuthToken)
	_, err = pool.Exec(ctx, `UPDATE channels SET rate_per_second = 50 WHERE tenant_id = $1`, w.ten.ID)
	require.NoError(t, err)
	return w
}

// inbound posts a signed inbound message from a contact to the tenant's
// WhatsApp number.
func (w *erasureWorld) inbound(from, profileName, body string, extra url.Values) {
	w.t.Helper()
	form := url.Values{
		"MessageSid": {"SM" + testdb.Unique() + testdb.Unique()}, "AccountSid": {w.ten.AccountSID},
		"From": {from}, "To": {w.ten.WhatsApp}, "Body": {body}, "ProfileName": {profileName}, "NumMedia": {"0"},
	}
	for k, v := range extra {
		form[k] = v
	}
	req, err := http.NewRequest(http.MethodPost, w.edge+"/twilio/inbound", strings.NewReader(form.Encode()))
	require.NoError(w.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", signature.Sign(w.ten.AuthToken, w.edge+"/twilio/inbound", form))
	resp, err := w.client.Do(req)
	require.NoError(w.t, err)
	resp.Body.Close()
	require.Equal(w.t, http.StatusOK, resp.StatusCode)
}

// api calls the operator API with the admin token.
func (w *erasureWorld) api(method, path string, body any, header http.Header) (int, map[string]any) {
	w.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(w.t, err)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, w.edge+path, r)
	require.NoError(w.t, err)
	req.Header.Set("Authorization", "Bearer "+w.admin)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := w.client.Do(req)
	require.NoError(w.t, err)
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// waitSettled waits until every job of the tenant is finished, every
// outbound message has a final status and every event is relayed to its jobs.
func (w *erasureWorld) waitSettled() {
	w.t.Helper()
	require.Eventually(w.t, func() bool {
		var open int
		err := w.pool.QueryRow(w.ctx, `
			SELECT (SELECT count(*) FROM river_job WHERE args->>'tenant_id' = $1::text
			        AND state NOT IN ('completed', 'cancelled', 'discarded'))
			     + (SELECT count(*) FROM messages WHERE tenant_id = $1::uuid AND direction = 'outbound'
			        AND status NOT IN ('delivered', 'read', 'failed', 'undelivered'))
			     + (SELECT count(*) FROM events WHERE tenant_id = $1::uuid AND seq IS NULL)`, w.ten.ID).Scan(&open)
		return err == nil && open == 0
	}, 20*time.Second, 20*time.Millisecond, "jobs or messages never settled: %s", w.state())
}

// state describes the tenant's jobs and messages, for a failure message.
func (w *erasureWorld) state() string {
	rows, err := w.pool.Query(w.ctx, `
		SELECT kind || ' ' || state || ' ' || coalesce(errors::text, '') FROM river_job WHERE args->>'tenant_id' = $1::text
		UNION ALL SELECT 'message ' || id || ' ' || status || ' ' || coalesce(error_reason, '') FROM messages WHERE tenant_id = $1::uuid`, w.ten.ID)
	if err != nil {
		return err.Error()
	}
	var out []string
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

// conversationOf is the open conversation of a contact address.
func (w *erasureWorld) conversationOf(address string) (contactID, convID int64) {
	w.t.Helper()
	require.NoError(w.t, w.pool.QueryRow(w.ctx, `
		SELECT ct.id, cv.id FROM contacts ct JOIN conversations cv ON cv.contact_id = ct.id
		WHERE ct.tenant_id = $1 AND ct.address = $2 AND cv.status <> 'closed'`, w.ten.ID, address).Scan(&contactID, &convID))
	return contactID, convID
}

// dump is the whole database as pg_dump writes it.
func (w *erasureWorld) dump() string {
	w.t.Helper()
	out, err := exec.Command("pg_dump", "--no-owner", "--data-only", w.dbURL).CombinedOutput()
	require.NoError(w.t, err, "pg_dump: %s", out)
	return string(out)
}

// redisText is every key and value in Redis under the test's memory prefix
// and every other key (pacing, ...) whose value is a string.
func (w *erasureWorld) redisText() string {
	w.t.Helper()
	var sb strings.Builder
	iter := w.rdb.Scan(w.ctx, 0, "*", 1000).Iterator()
	for iter.Next(w.ctx) {
		key := iter.Val()
		sb.WriteString(key + "\n")
		switch w.rdb.Type(w.ctx, key).Val() {
		case "string":
			sb.WriteString(w.rdb.Get(w.ctx, key).Val())
		case "hash":
			fmt.Fprint(&sb, w.rdb.HGetAll(w.ctx, key).Val())
		case "list":
			fmt.Fprint(&sb, w.rdb.LRange(w.ctx, key, 0, -1).Val())
		case "set":
			fmt.Fprint(&sb, w.rdb.SMembers(w.ctx, key).Val())
		case "zset":
			fmt.Fprint(&sb, w.rdb.ZRange(w.ctx, key, 0, -1).Val())
		}
		sb.WriteString("\n")
	}
	require.NoError(w.t, iter.Err())
	return sb.String()
}

// TestErasedContactLeavesNoTraceInTheDatabaseOrRedis runs a contact through
// the whole pipeline (messages, replies delivered, a person's message sent
// with an Idempotency-Key, media, a transcript, a summary, a handoff reason
// in the trace, memory cached in Redis), erases it through the API, and
// then greps a pg_dump of the database and every Redis key and value for
// its address, profile name and words. Another contact of the same tenant
// is untouched (and found by the same grep). Writing again afterwards makes
// a new contact with a new conversation and no memory.
func TestErasedContactLeavesNoTraceInTheDatabaseOrRedis(t *testing.T) {
	t.Parallel()
	w := newErasureWorld(t)
	u := testdb.Unique()
	number := testdb.PhoneNumber()
	erased := "whatsapp:" + number
	name := "Zelda Quartermain " + u
	words := []string{"my passport is X" + u + "1 what are your hours", "ship it to 12 Elm Street " + u}
	mediaURL := w.fake.URL() + "/2010-04-01/Accounts/" + w.ten.AccountSID + "/Messages/MM" + u + "/Media/ME" + u
	human := "Dear Zelda, your refund " + u + " is on its way"
	transcript := "this is my voice note " + u
	summary := "Zelda " + u + " asked about her passport"
	handoff := "customer Zelda " + u + " wants a person"

	// The tenant's CRM takes every event, with bodies: the event log must
	// not keep what the erasure removes either.
	crm := newReceiver(t)
	status, ep := w.api(http.MethodPut, "/api/v1/tenants/"+w.ten.ID+"/webhooks/crm", map[string]any{"url": crm.url("/"), "include_bodies": true}, nil)
	require.Equal(t, http.StatusCreated, status, "%v", ep)

	keptNumber := "whatsapp:" + testdb.PhoneNumber()
	keptWords := "the other customer " + u + " asks about prices"
	w.inbound(keptNumber, "Kept Person "+u, keptWords, nil)

	w.inbound(erased, name, words[0], nil)
	w.waitSettled()
	w.inbound(erased, name, words[1], url.Values{"NumMedia": {"1"}, "MediaUrl0": {mediaURL}, "MediaContentType0": {"image/jpeg"}})
	w.waitSettled()
	contactID, convID := w.conversationOf(erased)

	require.Contains(t, crm.bodies(), words[0], "the CRM got the contact's words (include_bodies)")
	status, msg := w.api(http.MethodPost, fmt.Sprintf("/api/v1/conversations/%d/messages", convID), map[string]any{"body": human},
		http.Header{"Idempotency-Key": {"refund-" + u}})
	require.Equal(t, http.StatusAccepted, status, "%v", msg)
	w.waitSettled()

	// What a voice note's transcription, a summary fold and a handoff leave behind.
	var inboundID int64
	require.NoError(t, w.pool.QueryRow(w.ctx, `SELECT max(id) FROM messages WHERE conversation_id = $1 AND direction = 'inbound'`, convID).Scan(&inboundID))
	_, err := store.SetTranscript(w.ctx, w.pool, w.ten.ID, inboundID, transcript)
	require.NoError(t, err)
	_, err = w.pool.Exec(w.ctx, `UPDATE conversations SET summary = $2, summary_through_id = $3 WHERE id = $1`, convID, summary, inboundID)
	require.NoError(t, err)
	require.NoError(t, store.AddEvent(w.ctx, w.pool, w.ten.ID, inboundID, "turn.handoff", map[string]any{"agent": "default", "reason": handoff}))

	secrets := append([]string{number, name, mediaURL, human, transcript, summary, handoff}, words...)
	before := w.dump()
	for _, s := range secrets {
		require.True(t, strings.Contains(before, s), "the contact's data is in the database before the erasure: %q", s)
	}
	require.Contains(t, w.redisText(), words[0], "the contact's turns are cached in Redis before the erasure")

	var refunded int64
	require.NoError(t, w.pool.QueryRow(w.ctx, `SELECT count(*) FROM credit_ledger WHERE tenant_id = $1`, w.ten.ID).Scan(&refunded))

	status, out := w.api(http.MethodDelete, "/api/v1/tenants/"+w.ten.ID+"/contacts/"+url.PathEscape(erased), nil, nil)
	require.Equal(t, http.StatusOK, status, "%v", out)
	list := out["erased"].([]any)
	require.Len(t, list, 1)
	got := list[0].(map[string]any)
	require.EqualValues(t, contactID, got["contact_id"])

	after := w.dump()
	for _, s := range secrets {
		require.False(t, strings.Contains(after, s), "erased data left in the database dump: %q", s)
	}
	require.True(t, strings.Contains(after, keptWords), "another contact's messages are kept")
	require.True(t, strings.Contains(after, keptNumber))
	redisAfter := w.redisText()
	for _, s := range secrets {
		require.False(t, strings.Contains(redisAfter, s), "erased data left in Redis: %q", s)
	}
	// Catching up on the events now shows the erased contact's without
	// its number or words, and the other contact's with them.
	status, events := w.api(http.MethodGet, "/api/v1/tenants/"+w.ten.ID+"/events?limit=200&include_bodies=true", nil, nil)
	require.Equal(t, http.StatusOK, status)
	listed, err := json.Marshal(events)
	require.NoError(t, err)
	require.Contains(t, string(listed), keptWords)
	require.Contains(t, string(listed), store.EventMessageReceived)
	for _, s := range secrets {
		require.NotContains(t, string(listed), s, "erased data in the event log")
	}

	// The audit record: who, when, which contact, how many rows.
	var by string
	var rows map[string]int64
	var at time.Time
	require.NoError(t, w.pool.QueryRow(w.ctx, `SELECT requested_by, rows, at FROM erasures WHERE tenant_id = $1 AND contact_id = $2 AND kind = 'contact'`,
		w.ten.ID, contactID).Scan(&by, &rows, &at))
	require.Equal(t, store.RequestedByAdmin, by)
	require.WithinDuration(t, time.Now(), at, time.Minute)
	var n int64
	require.NoError(t, w.pool.QueryRow(w.ctx, `SELECT count(*) FROM messages WHERE conversation_id = $1`, convID).Scan(&n))
	require.Equal(t, n, rows["messages"], "every message of the contact is counted")
	require.EqualValues(t, 1, rows["idempotency_keys"], "the person's message's stored answer")
	require.EqualValues(t, 1, rows["contacts"])
	require.EqualValues(t, 1, rows["conversations"])
	require.EqualValues(t, 1, rows["message_events"], "the handoff's free-text reason")
	require.Zero(t, rows["river_jobs_cancelled"], "every job had finished")

	// The ledger keeps its amounts, anonymous.
	var ledger int64
	require.NoError(t, w.pool.QueryRow(w.ctx, `SELECT count(*) FROM credit_ledger WHERE tenant_id = $1`, w.ten.ID).Scan(&ledger))
	require.Equal(t, refunded, ledger)

	// Writing again is a new contact: a new conversation, no memory of the old one.
	w.inbound(erased, name, "hello again "+u, nil)
	w.waitSettled()
	newContact, newConv := w.conversationOf(erased)
	require.NotEqual(t, contactID, newContact)
	require.NotEqual(t, convID, newConv)
	var history float64
	var source string
	require.NoError(t, w.pool.QueryRow(w.ctx, `
		SELECT (e.detail->>'history_turns')::float8, e.detail->>'source' FROM message_events e JOIN messages m ON m.id = e.message_id
		WHERE m.conversation_id = $1 AND e.kind = 'turn.memory'`, newConv).Scan(&history, &source))
	require.Zero(t, history, "the new contact's first turn remembers nothing")
	var replies int
	require.NoError(t, w.pool.QueryRow(w.ctx, `SELECT count(*) FROM messages WHERE conversation_id = $1 AND author = 'bot' AND status = 'delivered'`, newConv).Scan(&replies))
	require.Equal(t, 1, replies, "the new contact is answered")
}
