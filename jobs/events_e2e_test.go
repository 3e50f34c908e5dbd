package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/signing"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// receiver is a business's endpoint: it records every POST and answers as
// answer says (200 when nil).
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	posts  []post
	answer func(p post, n int) (status int, wait time.Duration)
}

type post struct {
	path      string
	eventID   string
	signature string
	body      []byte
	event     store.EventPayload
	status    int
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		p := post{path: req.URL.Path, eventID: req.Header.Get("X-Conversa-Event-Id"), signature: req.Header.Get(signing.HeaderName), body: body}
		_ = json.Unmarshal(body, &p.event)
		r.mu.Lock()
		n := 0
		for _, q := range r.posts {
			if q.eventID == p.eventID && q.path == p.path {
				n++
			}
		}
		answer := r.answer
		r.mu.Unlock()
		status, wait := http.StatusOK, time.Duration(0)
		if answer != nil {
			status, wait = answer(p, n)
		}
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-req.Context().Done():
			}
		}
		p.status = status
		r.mu.Lock()
		r.posts = append(r.posts, p)
		r.mu.Unlock()
		if status >= 300 && status < 400 {
			rw.Header().Set("Location", r.srv.URL+"/followed")
		}
		rw.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url(path string) string { return r.srv.URL + path }

// got is every POST to path so far.
func (r *receiver) got(path string) []post {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []post
	for _, p := range r.posts {
		if p.path == path {
			out = append(out, p)
		}
	}
	return out
}

// delivered is the events path acknowledged with a 2xx, by event id.
func (r *receiver) delivered(path string) map[string]post {
	out := map[string]post{}
	for _, p := range r.got(path) {
		if p.status >= 200 && p.status < 300 {
			out[p.eventID] = p
		}
	}
	return out
}

// bodies is every body received, as one text.
func (r *receiver) bodies() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sb strings.Builder
	for _, p := range r.posts {
		sb.Write(p.body)
	}
	return sb.String()
}

func (w *erasureWorld) putWebhook(name string, body map[string]any) {
	w.t.Helper()
	status, out := w.api(http.MethodPut, "/api/v1/tenants/"+w.ten.ID+"/webhooks/"+name, body, nil)
	require.Equal(w.t, http.StatusCreated, status, "%v", out)
}

// TestEventWebhooksReportThePipeline: a customer's message, the bot's reply
// and its delivery reach the business's endpoint as signed events, each
// once, with the ids the spec lists (and no body: include_bodies is off);
// an endpoint for handoffs only gets the handoff; GET /events lists the
// same events in the same order for catching up.
func TestEventWebhooksReportThePipeline(t *testing.T) {
	t.Parallel()
	w := newErasureWorld(t)
	rcv := newReceiver(t)
	w.putWebhook("crm", map[string]any{"url": rcv.url("/crm")})
	w.putWebhook("alerts", map[string]any{"url": rcv.url("/alerts"), "events": []string{store.EventConversationHandoff}})
	secrets, err := store.SigningSecrets(w.ctx, w.pool, testdb.Sealer(t), w.ten.ID)
	require.NoError(t, err)

	from := "whatsapp:" + testdb.PhoneNumber()
	w.inbound(from, "Ana", "what are your opening hours", nil)
	w.waitSettled()
	_, convID := w.conversationOf(from)
	var inboundID, replyID int64
	var inboundSID, replySID string
	require.NoError(t, w.pool.QueryRow(w.ctx, `SELECT id, twilio_sid FROM messages WHERE conversation_id = $1 AND direction = 'inbound'`, convID).Scan(&inboundID, &inboundSID))
	require.NoError(t, w.pool.QueryRow(w.ctx, `SELECT id, twilio_sid FROM messages WHERE conversation_id = $1 AND direction = 'outbound'`, convID).Scan(&replyID, &replySID))

	status, out := w.api(http.MethodPost, fmt.Sprintf("/api/v1/conversations/%d/handoff", convID), map[string]any{"to": "human"}, nil)
	require.Equal(t, http.StatusOK, status, "%v", out)
	w.waitSettled()

	crm := rcv.got("/crm")
	var types []string
	seen := map[string]bool{}
	for _, p := range crm {
		require.True(t, signing.Verify(p.signature, secrets[0], p.body), "signed with the tenant's secret")
		require.Equal(t, strconv.FormatInt(p.event.ID, 10), p.eventID)
		require.Equal(t, w.ten.ID, p.event.TenantID)
		require.False(t, seen[p.eventID], "each event once")
		seen[p.eventID] = true
		require.NotContains(t, p.event.Data, "body", "include_bodies is off")
		types = append(types, p.event.Type)
		switch p.event.Type {
		case store.EventMessageReceived:
			require.Equal(t, map[string]any{"message_id": float64(inboundID), "conversation_id": float64(convID),
				"message_sid": inboundSID, "from": from, "to": w.ten.WhatsApp}, p.event.Data)
		case store.EventMessageReplied:
			require.Equal(t, map[string]any{"message_id": float64(replyID), "conversation_id": float64(convID),
				"reply_to_id": float64(inboundID)}, p.event.Data)
		case store.EventMessageStatus:
			require.Equal(t, float64(replyID), p.event.Data["message_id"])
			require.Equal(t, replySID, p.event.Data["twilio_sid"])
			require.Contains(t, p.event.Data, "error_code")
		case store.EventConversationHandoff:
			require.Equal(t, map[string]any{"conversation_id": float64(convID), "to": "human", "reason": store.HandoffByOperator}, p.event.Data)
		}
	}
	require.Subset(t, types, []string{store.EventMessageReceived, store.EventMessageReplied, store.EventMessageStatus, store.EventConversationHandoff})
	var statuses []any
	for _, p := range crm {
		if p.event.Type == store.EventMessageStatus {
			statuses = append(statuses, p.event.Data["status"])
		}
	}
	require.Contains(t, statuses, "delivered", "the fake Twilio's callbacks reach the CRM as message.status")

	alerts := rcv.got("/alerts")
	require.Len(t, alerts, 1, "the alerts endpoint takes handoffs only")
	require.Equal(t, store.EventConversationHandoff, alerts[0].event.Type)

	status, listed := w.api(http.MethodGet, "/api/v1/tenants/"+w.ten.ID+"/events?limit=200", nil, nil)
	require.Equal(t, http.StatusOK, status)
	items := listed["items"].([]any)
	require.Len(t, items, len(crm), "every event the CRM got, and no other")
	for _, it := range items {
		require.True(t, seen[strconv.FormatInt(int64(it.(map[string]any)["id"].(float64)), 10)])
	}
}

// TestEventWebhookFailuresAreRetriedAndHoldUpNoOne: an endpoint that fails
// twice per event (HTTP 500) gets every event again until it answers 2xx,
// within seconds; one that never answers in time and one that redirects
// are failures, retried, and the redirect is never followed; while they
// fail, a healthy endpoint of the same tenant gets every event at once, and
// the pipeline answers the customer as usual.
func TestEventWebhookFailuresAreRetriedAndHoldUpNoOne(t *testing.T) {
	t.Parallel()
	w := newErasureWorld(t)
	rcv := newReceiver(t)
	rcv.answer = func(p post, n int) (int, time.Duration) {
		switch p.path {
		case "/flaky":
			if n < 2 {
				return http.StatusInternalServerError, 0
			}
		case "/slow":
			return http.StatusOK, 30 * time.Second
		case "/redirect":
			return http.StatusFound, 0
		}
		return http.StatusOK, 0
	}
	for _, name := range []string{"good", "flaky", "slow", "redirect"} {
		w.putWebhook(name, map[string]any{"url": rcv.url("/" + name)})
	}
	from := "whatsapp:" + testdb.PhoneNumber()
	w.inbound(from, "Ana", "hello", nil)
	_, convID := w.conversationOf(from)
	// relayed is how many events the tenant has now (its count grows
	// while Twilio's callbacks arrive).
	relayed := func() int {
		var n int
		require.NoError(t, w.pool.QueryRow(w.ctx, `SELECT count(*) FROM events WHERE tenant_id = $1 AND seq IS NOT NULL`, w.ten.ID).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool {
		var final bool
		err := w.pool.QueryRow(w.ctx, `
			SELECT bool_or(status = 'delivered') AND NOT EXISTS (SELECT 1 FROM events WHERE tenant_id = $2 AND seq IS NULL)
			FROM messages WHERE conversation_id = $1 AND direction = 'outbound'`, convID, w.ten.ID).Scan(&final)
		return err == nil && final && len(rcv.delivered("/good")) == relayed()
	}, 15*time.Second, 20*time.Millisecond, "the reply is delivered and the good endpoint has every event while others fail: %s", w.state())
	events := relayed()
	require.GreaterOrEqual(t, events, 4, "received, replied, and the reply's statuses")

	require.Eventually(t, func() bool { return len(rcv.delivered("/flaky")) == events }, 20*time.Second, 50*time.Millisecond,
		"the flaky endpoint gets every event after its failures: %v", len(rcv.delivered("/flaky")))
	for id := range rcv.delivered("/flaky") {
		n := 0
		for _, p := range rcv.got("/flaky") {
			if p.eventID == id {
				n++
			}
		}
		require.Equal(t, 3, n, "event %s: two failures, then the one delivery", id)
	}

	// The slow and redirecting endpoints' jobs keep failing, with the reason.
	require.Eventually(t, func() bool {
		var slow, redirect int
		_ = w.pool.QueryRow(w.ctx, `
			SELECT count(*) FILTER (WHERE errors::text LIKE '%no answer within%'),
			       count(*) FILTER (WHERE errors::text LIKE '%answered HTTP 302%')
			FROM river_job WHERE kind = 'conversa.event' AND args->>'tenant_id' = $1 AND state <> 'completed'`,
			w.ten.ID).Scan(&slow, &redirect)
		return slow == events && redirect == events
	}, 15*time.Second, 50*time.Millisecond, "every slow and redirected delivery is failing with its reason: %s", w.state())
	require.Empty(t, rcv.got("/followed"), "a redirect is never followed")
	require.NotEmpty(t, rcv.got("/redirect"))

	// Deleting the failing endpoints drops their deliveries: the jobs end
	// cancelled, visible in River UI, and nothing is tried again.
	for _, name := range []string{"slow", "redirect"} {
		status, _ := w.api(http.MethodDelete, "/api/v1/tenants/"+w.ten.ID+"/webhooks/"+name, nil, nil)
		require.Equal(t, http.StatusNoContent, status)
	}
	_, err := w.pool.Exec(w.ctx, `UPDATE river_job SET scheduled_at = now() WHERE kind = 'conversa.event' AND state = 'retryable'`)
	require.NoError(t, err)
	w.waitSettled()
	var cancelled int
	require.NoError(t, w.pool.QueryRow(w.ctx, `SELECT count(*) FROM river_job WHERE kind = 'conversa.event' AND args->>'tenant_id' = $1 AND state = 'cancelled'`,
		w.ten.ID).Scan(&cancelled))
	require.Equal(t, 2*events, cancelled)
}

// TestEventRetriesLastADay: a failing endpoint's event is retried within
// seconds at first, then at most hourly, for about 24 h in all; then River
// discards the job (visible in River UI).
func TestEventRetriesLastADay(t *testing.T) {
	t.Parallel()
	require.Equal(t, time.Second, jobs.EventRetryDelay(1))
	require.Equal(t, 2*time.Second, jobs.EventRetryDelay(2))
	require.Equal(t, 4*time.Second, jobs.EventRetryDelay(3))
	var total time.Duration
	for attempt := 1; attempt < jobargs.EventMaxAttempts; attempt++ {
		d := jobs.EventRetryDelay(attempt)
		require.LessOrEqual(t, d, time.Hour)
		total += d
	}
	require.Greater(t, total, 24*time.Hour)
	require.Less(t, total, 25*time.Hour)
	opts := jobargs.EventArgs{}.InsertOpts()
	require.Equal(t, jobargs.QueueEvents, opts.Queue)
	require.Equal(t, jobargs.EventMaxAttempts, opts.MaxAttempts)
}

// TestEventJobIsUniquePerEndpointAndEvent: inserting the same delivery
// twice (a relay retried after a lost commit answer) makes one job.
func TestEventJobIsUniquePerEndpointAndEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.NewPool(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	require.NoError(t, err)
	args := jobargs.EventArgs{TenantID: "00000000-0000-0000-0000-000000000001", EndpointID: 7, EventID: 9}
	first, err := rc.Insert(ctx, args, nil)
	require.NoError(t, err)
	second, err := rc.Insert(ctx, args, nil)
	require.NoError(t, err)
	require.True(t, second.UniqueSkippedAsDuplicate)
	require.Equal(t, first.Job.ID, second.Job.ID)
	other, err := rc.Insert(ctx, jobargs.EventArgs{TenantID: args.TenantID, EndpointID: 8, EventID: 9}, nil)
	require.NoError(t, err)
	require.False(t, other.UniqueSkippedAsDuplicate, "another endpoint's delivery of the event is its own job")
}
