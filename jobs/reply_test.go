package jobs_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// recorder is the offline provider, remembering every request it answered.
type recorder struct {
	agents.Offline
	mu   sync.Mutex
	reqs []agents.Request
}

func (r *recorder) Reply(ctx context.Context, req agents.Request) (agents.Answer, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	return r.Offline.Reply(ctx, req)
}

func (r *recorder) calls() []agents.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]agents.Request(nil), r.reqs...)
}

// testRedis is the local Redis; keys get a per-test prefix, because the
// test binaries' databases hand out overlapping ids.
func testRedis(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", DialTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func testMemory(t testing.TB, rdb *redis.Client) *store.Memory {
	t.Helper()
	m := store.NewMemory(rdb, "conversa:test:"+testdb.Unique()+":", agents.MemoryWindow)
	m.TTL = time.Minute
	return m
}

// turnEnv is one test's tenant, transaction and reply worker.
type turnEnv struct {
	t      testing.TB
	ctx    context.Context
	tx     pgx.Tx
	ten    testdb.Tenant
	ch     store.Channel
	from   string
	llm    *recorder
	worker *jobs.ReplyWorker
	tw     *rivertest.Worker[jobargs.ReplyArgs, pgx.Tx]
}

func newTurnEnv(t testing.TB, credits int64, edit func(*jobs.Deps)) *turnEnv {
	t.Helper()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, credits)
	ch, err := store.ChannelByAddress(ctx, tx, ten.WhatsApp)
	require.NoError(t, err)
	llm := &recorder{}
	d := jobs.Deps{DB: tx, LLM: llm, Memory: testMemory(t, testRedis(t))}
	if edit != nil {
		edit(&d)
	}
	w := jobs.NewReplyWorker(d)
	return &turnEnv{
		t: t, ctx: ctx, tx: tx, ten: ten, ch: ch, from: "whatsapp:" + testdb.PhoneNumber(), llm: llm, worker: w,
		tw: rivertest.NewWorker(t, riverpgxv5.New(nil), &river.Config{}, w),
	}
}

// inbound stores a customer message as the webhook would.
func (e *turnEnv) inbound(body string) store.InboundResult {
	e.t.Helper()
	res, err := store.InsertInbound(e.ctx, e.tx, store.Inbound{
		TenantID: e.ten.ID, ChannelID: e.ch.ID, From: e.from, MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: body,
	})
	require.NoError(e.t, err)
	return res
}

// work runs the turn for in.
func (e *turnEnv) work(in store.InboundResult) *rivertest.WorkResult {
	e.t.Helper()
	res, err := e.tw.Work(e.ctx, e.t, e.tx, jobargs.ReplyArgs{TenantID: e.ten.ID, ConversationID: in.ConversationID, MessageID: in.MessageID}, nil)
	require.NoError(e.t, err)
	return res
}

// replies returns the bodies of the bot's replies in the tenant's conversations.
func (e *turnEnv) replies() []string {
	e.t.Helper()
	rows, err := e.tx.Query(e.ctx, `SELECT body FROM messages WHERE tenant_id = $1 AND direction = 'outbound' ORDER BY id`, e.ten.ID)
	require.NoError(e.t, err)
	bodies, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(e.t, err)
	return bodies
}

func (e *turnEnv) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.tx.QueryRow(e.ctx, sql, args...).Scan(&n))
	return n
}

func (e *turnEnv) lastEvent(messageID int64) string {
	e.t.Helper()
	var kind string
	require.NoError(e.t, e.tx.QueryRow(e.ctx, `SELECT kind FROM message_events WHERE message_id = $1 ORDER BY id DESC LIMIT 1`, messageID).Scan(&kind))
	return kind
}

func (e *turnEnv) sendJobs() int {
	return e.count(`SELECT count(*) FROM river_job WHERE kind = 'conversa.send' AND args->>'tenant_id' = $1`, e.ten.ID)
}

func (e *turnEnv) credits() int64 {
	e.t.Helper()
	t, err := store.GetTenant(e.ctx, e.tx, e.ten.ID)
	require.NoError(e.t, err)
	return t.Credits
}

// events returns the kinds of a message's trace events with their details.
func (e *turnEnv) events(messageID int64) map[string]map[string]any {
	e.t.Helper()
	rows, err := e.tx.Query(e.ctx, `SELECT kind, detail FROM message_events WHERE message_id = $1 ORDER BY id`, messageID)
	require.NoError(e.t, err)
	out := map[string]map[string]any{}
	for rows.Next() {
		var kind string
		var detail map[string]any
		require.NoError(e.t, rows.Scan(&kind, &detail))
		out[kind] = detail
	}
	require.NoError(e.t, rows.Err())
	return out
}

func TestReplyAnswersWithDebitSendJobAndTrace(t *testing.T) {
	t.Parallel()
	e := newTurnEnv(t, 3, nil)
	in := e.inbound("hi, what are your opening hours?")

	res := e.work(in)
	require.Equal(t, river.EventKindJobCompleted, res.EventKind)
	replies := e.replies()
	require.Len(t, replies, 1)
	require.Contains(t, replies[0], "Monday to Friday")
	require.EqualValues(t, 2, e.credits())
	require.Equal(t, 1, e.sendJobs())
	require.Equal(t, 1, e.count(`SELECT count(*) FROM credit_ledger WHERE tenant_id = $1 AND reason = 'reply' AND amount = -1`, e.ten.ID))

	ev := e.events(in.MessageID)
	require.Equal(t, "assistant", ev["turn.routed"]["agent"])
	require.NotEmpty(t, ev["turn.routed"]["reason"])
	require.Equal(t, "offline", ev["turn.llm"]["provider"])
	require.Contains(t, ev["turn.llm"], "prompt_tokens")
	require.Contains(t, ev["turn.llm"], "latency_ms")
	require.Contains(t, ev, "turn.replied")
	require.EqualValues(t, 1, ev["turn.replied"]["credits_debited"])
	require.EqualValues(t, 2, ev["turn.replied"]["credits_balance"], "the balance after this reply's debit")
	require.Equal(t, "turn.replied", e.lastEvent(in.MessageID), "the turn's events end with turn.replied")
	require.Equal(t, 1, e.count(`SELECT count(*) FROM message_events WHERE message_id = $1 AND kind = 'turn.replied'`, in.MessageID))

	// The reply's own trace starts with what produced it.
	replyID := int64(ev["turn.replied"]["reply_message_id"].(float64))
	reply := e.events(replyID)["turn.reply"]
	require.Equal(t, "assistant", reply["agent"])
	require.Equal(t, "offline-rules", reply["model"])
	require.EqualValues(t, in.MessageID, reply["reply_to_id"])
}

func TestReplyDebouncedBurstGetsOneReplySeeingAll(t *testing.T) {
	t.Parallel()
	e := newTurnEnv(t, 5, func(d *jobs.Deps) { d.Debounce = time.Hour })
	bodies := []string{"hello", "I have a question", "about your prices", "and opening hours", "thanks"}
	var burst []store.InboundResult
	for _, b := range bodies {
		burst = append(burst, e.inbound(b))
	}
	// The turns of the first four are superseded by the fifth.
	for _, in := range burst[:4] {
		require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
		require.Equal(t, "superseded", e.events(in.MessageID)["turn.skipped"]["reason"])
	}
	last := burst[4]
	// The conversation has not been quiet for the window yet: the turn waits.
	require.Equal(t, river.EventKindJobSnoozed, e.work(last).EventKind)
	require.Empty(t, e.replies())

	_, err := e.tx.Exec(e.ctx, `UPDATE conversations SET last_inbound_at = now() - interval '2 hours' WHERE id = $1`, last.ConversationID)
	require.NoError(t, err)
	require.Equal(t, river.EventKindJobCompleted, e.work(last).EventKind)

	require.Len(t, e.replies(), 1)
	calls := e.llm.calls()
	require.Len(t, calls, 1, "one LLM call for the whole burst")
	require.Equal(t, bodies, calls[0].Pending, "the agent sees all five messages")
	require.EqualValues(t, 4, e.credits())
}

func TestReplySupersededTurnIsSilent(t *testing.T) {
	t.Parallel()
	e := newTurnEnv(t, 5, nil)
	first := e.inbound("hello")
	e.inbound("are you there?")

	require.Equal(t, river.EventKindJobCompleted, e.work(first).EventKind)
	require.Empty(t, e.replies())
	require.Empty(t, e.llm.calls())
	require.Equal(t, "superseded", e.events(first.MessageID)["turn.skipped"]["reason"])
}

func TestReplyWithoutCreditsCallsNoLLM(t *testing.T) {
	t.Parallel()
	e := newTurnEnv(t, 0, nil)
	in := e.inbound("hello")

	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	require.Empty(t, e.replies())
	require.Empty(t, e.llm.calls(), "no credits, no LLM call")
	require.Zero(t, e.sendJobs())
	ev := e.events(in.MessageID)
	require.Contains(t, ev, "turn.no_credits")
	require.EqualValues(t, 1, ev["turn.no_credits"]["reply_price"])
}

func TestReplyHandoffThenSilence(t *testing.T) {
	t.Parallel()
	e := newTurnEnv(t, 5, nil)
	in := e.inbound("I want to talk to a human please")

	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	require.Equal(t, []string{agents.HandoffNotice}, e.replies(), "the customer is told a person will answer")
	conv, err := store.GetConversation(e.ctx, e.tx, e.ten.ID, in.ConversationID)
	require.NoError(t, err)
	require.EqualValues(t, "human", conv.Status)
	require.Contains(t, e.events(in.MessageID), "turn.handoff")

	// While a person has the conversation the bot says nothing.
	later := e.inbound("hello? what are your hours?")
	require.Equal(t, river.EventKindJobCompleted, e.work(later).EventKind)
	require.Len(t, e.replies(), 1)
	require.Len(t, e.llm.calls(), 1)
	require.Contains(t, e.events(later.MessageID)["turn.skipped"]["reason"], "human")

	// Handed back, the bot answers what comes after, not what came during.
	_, err = store.SetConversationStatus(e.ctx, e.tx, e.ten.ID, in.ConversationID, "bot", store.HandoffByOperator)
	require.NoError(t, err)
	after := e.inbound("what are your prices?")
	require.Equal(t, river.EventKindJobCompleted, e.work(after).EventKind)
	require.Len(t, e.replies(), 2)
	calls := e.llm.calls()
	require.Equal(t, []string{"what are your prices?"}, calls[1].Pending)
	var sawHandoffTurn bool
	for _, h := range calls[1].History {
		sawHandoffTurn = sawHandoffTurn || (h.DuringHandoff && strings.Contains(h.Text, "hours"))
	}
	require.True(t, sawHandoffTurn, "the message sent during the handoff is context, marked as such")
}

func TestReplyOptedOutIsSilent(t *testing.T) {
	t.Parallel()
	e := newTurnEnv(t, 5, nil)
	in := e.inbound("hello")
	_, err := e.tx.Exec(e.ctx, `UPDATE contacts SET opted_out = true WHERE id = $1`, in.ContactID)
	require.NoError(t, err)

	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	require.Empty(t, e.replies())
	require.Empty(t, e.llm.calls())
	require.Equal(t, "contact opted out", e.events(in.MessageID)["turn.skipped"]["reason"])
}

func TestReplyRetriedAfterFailedCommitRepliesOnce(t *testing.T) {
	t.Parallel()
	e := newTurnEnv(t, 5, nil)
	in := e.inbound("hello")

	e.worker.SetBeforeCommit(func(context.Context, pgx.Tx) error { return errors.New("connection lost") })
	args := jobargs.ReplyArgs{TenantID: e.ten.ID, ConversationID: in.ConversationID, MessageID: in.MessageID}
	_, err := e.tw.Work(e.ctx, t, e.tx, args, nil)
	require.ErrorContains(t, err, "connection lost")
	require.Empty(t, e.replies(), "nothing of the failed attempt is left")
	require.Zero(t, e.sendJobs())
	require.EqualValues(t, 5, e.credits())

	e.worker.SetBeforeCommit(nil)
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	// The same turn once more (a rescued or duplicated job): the unique reply
	// row stops it, though the LLM ran again.
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)

	require.Len(t, e.replies(), 1)
	require.Equal(t, 1, e.sendJobs())
	require.EqualValues(t, 4, e.credits())
	require.Contains(t, e.events(in.MessageID), "turn.duplicate")
}

func TestReplyWithRedisDownStillAnswers(t *testing.T) {
	t.Parallel()
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = dead.Close() })
	e := newTurnEnv(t, 5, func(d *jobs.Deps) { d.Memory = testMemory(t, dead) })
	in := e.inbound("hello")

	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	require.Len(t, e.replies(), 1)
	require.Equal(t, "postgres (redis unavailable)", e.events(in.MessageID)["turn.memory"]["source"])
}

func TestReplyMemoryFromRedisSeesEarlierTurns(t *testing.T) {
	t.Parallel()
	rdb := testRedis(t)
	mem := testMemory(t, rdb)
	mem.Settle = 0 // in a test transaction every row is already "old"
	e := newTurnEnv(t, 5, func(d *jobs.Deps) { d.Memory = mem })

	first := e.inbound("hello")
	e.work(first)
	require.Equal(t, "postgres", e.events(first.MessageID)["turn.memory"]["source"])

	second := e.inbound("what are your prices?")
	e.work(second)
	require.Equal(t, "redis", e.events(second.MessageID)["turn.memory"]["source"])
	calls := e.llm.calls()
	require.Len(t, calls, 2)
	require.Equal(t, []agents.Turn{
		{Author: store.AuthorContact, Text: "hello"},
		{Author: store.AuthorBot, Text: e.replies()[0]},
	}, calls[1].History)
	require.Equal(t, []string{"what are your prices?"}, calls[1].Pending)
}

func TestReplyFoldsOldTurnsIntoSummary(t *testing.T) {
	t.Parallel()
	e := newTurnEnv(t, 100, nil)
	var last store.InboundResult
	for i := 0; i < agents.MemoryTurns/2+2; i++ {
		last = e.inbound("question about prices")
		e.work(last)
	}
	var summary string
	var through int64
	require.NoError(t, e.tx.QueryRow(e.ctx, `SELECT summary, summary_through_id FROM conversations WHERE id = $1`, last.ConversationID).Scan(&summary, &through))
	require.Contains(t, summary, "customer: question about prices")
	require.NotZero(t, through)
	calls := e.llm.calls()
	require.LessOrEqual(t, len(calls[len(calls)-1].History), agents.MemoryTurns)
	require.NotEmpty(t, calls[len(calls)-1].Summary)
}

// failingLLM is a provider whose every call fails like an unreachable server.
type failingLLM struct{ agents.Offline }

func (failingLLM) Reply(context.Context, agents.Request) (agents.Answer, error) {
	return agents.Answer{}, context.DeadlineExceeded
}

func TestReplyLLMFailureIsRetriedAndExplained(t *testing.T) {
	t.Parallel()
	e := newTurnEnv(t, 5, func(d *jobs.Deps) { d.LLM = failingLLM{} })
	in := e.inbound("hello")
	args := jobargs.ReplyArgs{TenantID: e.ten.ID, ConversationID: in.ConversationID, MessageID: in.MessageID}

	_, err := e.tw.Work(e.ctx, t, e.tx, args, &river.InsertOpts{MaxAttempts: 2})
	require.Error(t, err, "an attempt that is not the last is retried")
	require.Empty(t, e.replies())
	require.EqualValues(t, 5, e.credits(), "no reply, no debit")
	ev := e.events(in.MessageID)
	require.Equal(t, "timeout", ev["turn.llm_failed"]["error"])

	// The last attempt does not fall silent: the customer gets the notice
	// and a person takes the conversation.
	res, err := e.tw.Work(e.ctx, t, e.tx, args, &river.InsertOpts{MaxAttempts: 1})
	require.NoError(t, err)
	require.Equal(t, river.EventKindJobCompleted, res.EventKind)
	require.Equal(t, []string{agents.DefaultFallbackMessage}, e.replies())
	require.EqualValues(t, 5, e.credits(), "the notice costs nothing")
	ev = e.events(in.MessageID)
	require.Equal(t, "llm_failed", ev["turn.gave_up"]["reason"])
	require.Equal(t, "timeout", ev["turn.gave_up"]["error"])
	require.Equal(t, 1, e.count(`SELECT count(*) FROM conversations WHERE id = $1 AND status = 'human'`, in.ConversationID))
}

// The turn's transaction runs on generic plans (River's completion
// statement is planned again on every call otherwise), and only it: the
// connection is back to Postgres's default after it, whether the turn
// began on a connection or, in tests, inside a transaction.
func TestTurnTransactionRunsOnGenericPlansAlone(t *testing.T) {
	ctx := context.Background()
	conn, err := testdb.Pool(t).Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	mode := func(db store.DBTX) string {
		var m string
		require.NoError(t, db.QueryRow(ctx, `SELECT current_setting('plan_cache_mode')`).Scan(&m))
		return m
	}
	require.Equal(t, "auto", mode(conn))
	for _, committed := range []bool{true, false} {
		tx, err := jobs.BeginTurn(ctx, conn.Conn())
		require.NoError(t, err)
		require.Equal(t, "force_generic_plan", mode(tx))
		if committed {
			require.NoError(t, tx.Commit(ctx))
		} else {
			require.NoError(t, tx.Rollback(ctx))
		}
		require.Equal(t, "auto", mode(conn), "committed %v", committed)
	}

	outer, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer outer.Rollback(ctx) //nolint:errcheck // test cleanup
	tx, err := jobs.BeginTurn(ctx, outer)
	require.NoError(t, err)
	require.Equal(t, "force_generic_plan", mode(tx))
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, outer.Rollback(ctx))
	require.Equal(t, "auto", mode(conn))
}
