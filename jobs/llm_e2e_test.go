package jobs_test

import (
	"context"
	"fmt"
	"github.com/conversa/conversa/jobs/jobargs"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/fakellm"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/store"
)

// llmEnv is the real turn path against the fake OpenAI-compatible server:
// a River client working conversa.reply through an agents.Gate, in a River
// schema of the test's own (so no other test's client works its jobs),
// committed to the database.
type llmEnv struct {
	t    *testing.T
	ctx  context.Context
	pool *pgxpool.Pool
	ten  testdb.Tenant
	ch   store.Channel
	fake *fakellm.Server
	gate *agents.Gate
	opts llmOpts
	// schema holds this test's River tables.
	schema string
	client *river.Client[pgx.Tx]
}

type llmOpts struct {
	concurrency int
	llmTimeout  time.Duration
	giveUp      time.Duration
	// jobTimeout is the River client's JobTimeout (what sends get); the
	// turn's own timeout follows from llmTimeout.
	jobTimeout time.Duration
	maxRetries int
	fake       fakellm.Options
}

func newLLMEnv(t *testing.T, o llmOpts) *llmEnv {
	t.Helper()
	ctx := context.Background()
	pool := testdb.Pool(t)
	ten := testdb.NewTenant(t, pool, 1000)
	ch, err := store.ChannelByAddress(ctx, pool, ten.WhatsApp)
	require.NoError(t, err)
	fake, err := fakellm.Start(o.fake)
	require.NoError(t, err)
	t.Cleanup(fake.Close)

	schema := "river_" + testdb.Unique()
	_, err = pool.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: schema})
	require.NoError(t, err)
	_, err = migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	require.NoError(t, err)

	p, err := agents.NewOpenAI(agents.OpenAIConfig{BaseURL: fake.URL(), APIKey: "sk-test", Model: "fake-model",
		Timeout: o.llmTimeout, MaxRetries: o.maxRetries})
	require.NoError(t, err)
	e := &llmEnv{t: t, ctx: ctx, pool: pool, ten: ten, ch: ch, fake: fake, opts: o, schema: schema,
		gate: agents.NewGate(p, agents.GateConfig{Concurrency: o.concurrency, OpenFor: 300 * time.Millisecond})}
	e.client = e.start(pool)
	return e
}

// start runs a River client on pool working this env's turns.
func (e *llmEnv) start(pool *pgxpool.Pool) *river.Client[pgx.Tx] {
	e.t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	workers := river.NewWorkers()
	require.NoError(e.t, jobs.AddWorkers(workers, jobs.Deps{
		DB: pool, Logger: logger, LLM: e.gate, LLMTimeout: e.opts.llmTimeout, LLMGiveUp: e.opts.giveUp,
		Memory: testMemory(e.t, testRedis(e.t)),
	}))
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Logger: logger, Workers: workers, Schema: e.schema,
		// conversa.send is inserted, not worked, here: its worker is not in this test.
		SkipUnknownJobCheck:  true,
		JobTimeout:           e.opts.jobTimeout,
		RescueStuckJobsAfter: e.opts.jobTimeout,
		Queues:               map[string]river.QueueConfig{jobargs.QueueReply: {MaxWorkers: e.opts.concurrency, FetchCooldown: 5 * time.Millisecond, FetchPollInterval: 50 * time.Millisecond}},
		Middleware:           []rivertype.Middleware{&jobargs.ShortDelayMiddleware{MaxDelay: 5 * time.Second, Now: time.Now}},
	})
	require.NoError(e.t, err)
	require.NoError(e.t, rc.Start(e.ctx))
	e.t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rc.StopAndCancel(stopCtx)
	})
	return rc
}

// customersWrite stores one message from each of n new customers and
// queues their turns in one transaction, as the webhook does.
func (e *llmEnv) customersWrite(n int, body string) []store.InboundResult {
	e.t.Helper()
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(e.t, err)
	defer tx.Rollback(e.ctx) //nolint:errcheck
	var out []store.InboundResult
	for range n {
		res, err := store.InsertInbound(e.ctx, tx, store.Inbound{
			TenantID: e.ten.ID, ChannelID: e.ch.ID, From: "whatsapp:" + testdb.PhoneNumber(),
			MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: body,
		})
		require.NoError(e.t, err)
		out = append(out, res)
		e.queueTurn(tx, res)
	}
	require.NoError(e.t, tx.Commit(e.ctx))
	return out
}

func (e *llmEnv) queueTurn(tx pgx.Tx, res store.InboundResult) {
	e.t.Helper()
	_, err := e.client.InsertTx(e.ctx, tx, jobargs.ReplyArgs{TenantID: e.ten.ID, ConversationID: res.ConversationID, MessageID: res.MessageID}, nil)
	require.NoError(e.t, err)
}

// waitTurnsDone waits until no turn job of this env is left to run.
func (e *llmEnv) waitTurnsDone(within time.Duration) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		var left int
		err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM `+e.schema+`.river_job
			WHERE kind = 'conversa.reply' AND state NOT IN ('completed', 'discarded', 'cancelled')`).Scan(&left)
		return err == nil && left == 0
	}, within, 50*time.Millisecond)
}

// repliesPer counts the outbound messages answering each inbound message,
// and their send jobs.
func (e *llmEnv) repliesPer(in []store.InboundResult) (map[int64]int, int) {
	e.t.Helper()
	counts := map[int64]int{}
	for _, m := range in {
		var n int
		require.NoError(e.t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM messages WHERE tenant_id = $1 AND reply_to_id = $2`, e.ten.ID, m.MessageID).Scan(&n))
		counts[m.MessageID] = n
	}
	var sends int
	require.NoError(e.t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM `+e.schema+`.river_job WHERE kind = 'conversa.send'`).Scan(&sends))
	return counts, sends
}

// requireAnsweredOnce checks that every message has exactly one reply, sent by one job.
func (e *llmEnv) requireAnsweredOnce(in []store.InboundResult) {
	e.t.Helper()
	counts, sends := e.repliesPer(in)
	for id, n := range counts {
		require.Equal(e.t, 1, n, "message %d has %d replies", id, n)
	}
	require.Equal(e.t, len(in), sends, "one send job per reply")
}

func (e *llmEnv) event(messageID int64, kind string) map[string]any {
	e.t.Helper()
	var detail map[string]any
	err := e.pool.QueryRow(e.ctx, `SELECT detail FROM message_events WHERE tenant_id = $1 AND message_id = $2 AND kind = $3 ORDER BY id DESC LIMIT 1`,
		e.ten.ID, messageID, kind).Scan(&detail)
	if err == pgx.ErrNoRows {
		return nil
	}
	require.NoError(e.t, err)
	return detail
}

// The reply queue used to run 20 workers: with a model that takes a
// second, turns now run as many at once as LLM_CONCURRENCY allows.
func TestTurnsRunAboveTheOldWorkerCount(t *testing.T) {
	t.Parallel()
	e := newLLMEnv(t, llmOpts{concurrency: 64, llmTimeout: 10 * time.Second, jobTimeout: 15 * time.Second, fake: fakellm.Options{Latency: time.Second}})
	in := e.customersWrite(60, "do you deliver?")
	e.waitTurnsDone(60 * time.Second)
	e.requireAnsweredOnce(in)
	require.Greater(t, e.fake.MaxInFlight(), int64(20), "more calls in flight than the old 20 workers")
	require.LessOrEqual(t, e.fake.MaxInFlight(), int64(64), "never more than LLM_CONCURRENCY")
	require.EqualValues(t, 60, e.fake.Calls(), "one call per turn")
}

// A model slower than the old 6 s cut, with LLM_TIMEOUT above it and the
// client's JobTimeout (what a send gets) below it: every message is
// answered by one call, none cut and retried.
func TestSlowModelAnswersEveryMessageOnce(t *testing.T) {
	t.Parallel()
	e := newLLMEnv(t, llmOpts{concurrency: 8, llmTimeout: 20 * time.Second, jobTimeout: 3 * time.Second,
		fake: fakellm.Options{Latency: 7 * time.Second}})
	in := e.customersWrite(5, "what does the premium plan include?")
	e.waitTurnsDone(60 * time.Second)
	e.requireAnsweredOnce(in)
	require.EqualValues(t, 5, e.fake.Calls(), "no call was cut and retried")
	require.EqualValues(t, 5, e.fake.Answered())
}

// A 429 makes every turn wait out Retry-After together: the provider sees
// the calls already on their way and then one probe per back-off, not each
// turn retrying on its own. Every message is answered once when it lifts.
func TestRateLimitIsOneSharedBackoff(t *testing.T) {
	t.Parallel()
	e := newLLMEnv(t, llmOpts{concurrency: 16, llmTimeout: 10 * time.Second, jobTimeout: 15 * time.Second})
	e.fake.Inject(fakellm.Fault{Kind: fakellm.FaultRateLimit, RetryAfter: time.Second})
	const n = 30
	in := e.customersWrite(n, "hello")
	require.Eventually(t, func() bool { return e.fake.Calls() >= 1 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(2500 * time.Millisecond) // the limit lasts a few Retry-After periods
	refusedWhileLimited := e.fake.Calls()
	e.fake.Clear()

	e.waitTurnsDone(60 * time.Second)
	e.requireAnsweredOnce(in)
	// At most the calls in flight when the first 429 came back (16), then
	// one probe per Retry-After period.
	require.LessOrEqual(t, refusedWhileLimited, int64(16+5), "the turns shared one back-off")
	require.LessOrEqual(t, e.fake.Calls()-e.fake.Answered(), int64(16+5))
	var retried int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM `+e.schema+`.river_job WHERE kind = 'conversa.reply' AND errors IS NOT NULL`).Scan(&retried))
	require.Zero(t, retried, "waiting for the provider uses no attempts")
}

// The provider fails for a while (5xx), then recovers: turns wait, none
// gives up or fails, and every message is answered exactly once.
func TestOutageThenRecoveryAnswersEveryMessageOnce(t *testing.T) {
	t.Parallel()
	e := newLLMEnv(t, llmOpts{concurrency: 16, llmTimeout: 5 * time.Second, jobTimeout: 15 * time.Second})
	e.fake.Inject(fakellm.Fault{Kind: fakellm.FaultServerError})
	in := e.customersWrite(20, "are you open today?")
	require.Eventually(t, func() bool { return e.event(in[0].MessageID, "turn.llm_failed") != nil }, 10*time.Second, 20*time.Millisecond)
	time.Sleep(time.Second)
	e.fake.Clear()

	e.waitTurnsDone(60 * time.Second)
	e.requireAnsweredOnce(in)
	for _, m := range in {
		require.Nil(t, e.event(m.MessageID, "turn.gave_up"))
	}
	var human int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM conversations WHERE tenant_id = $1 AND status <> 'bot'`, e.ten.ID).Scan(&human))
	require.Zero(t, human)
}

// A provider that stays down past LLM_GIVE_UP: the customer gets the
// agent's fallback message once and a person takes the conversation.
func TestGiveUpSendsOneNoticeAndHandsToAPerson(t *testing.T) {
	t.Parallel()
	e := newLLMEnv(t, llmOpts{concurrency: 4, llmTimeout: time.Second, giveUp: 2 * time.Second, jobTimeout: 15 * time.Second})
	_, _, err := store.PutAgent(e.ctx, e.pool, e.ten.ID, store.Agent{Name: "assistant", FallbackMessage: "We are having trouble; a colleague will write to you."}, ptr(true))
	require.NoError(t, err)
	e.fake.Inject(fakellm.Fault{Kind: fakellm.FaultUnavailable})
	in := e.customersWrite(3, "where is my order?")

	e.waitTurnsDone(60 * time.Second)
	counts, sends := e.repliesPer(in)
	for _, m := range in {
		require.Equal(t, 1, counts[m.MessageID], "one notice")
		var body, author string
		var reserved int
		require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT body, author, credits_reserved FROM messages WHERE reply_to_id = $1`, m.MessageID).Scan(&body, &author, &reserved))
		require.Equal(t, "We are having trouble; a colleague will write to you.", body)
		require.Equal(t, "bot", author)
		require.Zero(t, reserved, "the notice is free")
		gaveUp := e.event(m.MessageID, "turn.gave_up")
		require.NotNil(t, gaveUp)
		require.Equal(t, agents.ReasonOutage, gaveUp["reason"])
		conv, err := store.GetConversation(e.ctx, e.pool, e.ten.ID, m.ConversationID)
		require.NoError(t, err)
		require.Equal(t, store.ConversationHuman, conv.Status)
	}
	require.Equal(t, 3, sends, "each notice goes out through its conversa.send job")

	// The customer writes again: a person has the conversation, the bot stays silent.
	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	var from string
	require.NoError(t, tx.QueryRow(e.ctx, `SELECT c.address FROM contacts c JOIN conversations v ON v.contact_id = c.id WHERE v.id = $1`, in[0].ConversationID).Scan(&from))
	again, err := store.InsertInbound(e.ctx, tx, store.Inbound{TenantID: e.ten.ID, ChannelID: e.ch.ID, From: from, MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "hello?"})
	require.NoError(t, err)
	e.queueTurn(tx, again)
	require.NoError(t, tx.Commit(e.ctx))
	e.waitTurnsDone(30 * time.Second)
	counts, _ = e.repliesPer([]store.InboundResult{again})
	require.Zero(t, counts[again.MessageID])
}

// A worker process dies while its turn waits on a slow model: the job is
// left running, as after a crash. Another process rescues it once the
// turn's own timeout (from LLM_TIMEOUT) has passed, and the message is
// answered exactly once.
func TestCrashDuringASlowCallResumesAndAnswersOnce(t *testing.T) {
	t.Parallel()
	e := newLLMEnv(t, llmOpts{concurrency: 4, llmTimeout: 2 * time.Second, jobTimeout: time.Second,
		fake: fakellm.Options{Latency: 1500 * time.Millisecond}})
	// The first process: its own pool, which the crash cuts off for good.
	e.client.StopAndCancel(e.ctx) //nolint:errcheck // this env's default client is not used here
	crashed := make(chan struct{})
	cfg, err := pgxpool.ParseConfig(testdb.URL(t))
	require.NoError(t, err)
	appName := "crash_" + testdb.Unique()
	cfg.ConnConfig.RuntimeParams["application_name"] = appName
	cfg.BeforeConnect = func(context.Context, *pgx.ConnConfig) error {
		select {
		case <-crashed:
			return fmt.Errorf("process is dead")
		default:
			return nil
		}
	}
	deadPool, err := pgxpool.NewWithConfig(e.ctx, cfg)
	require.NoError(t, err)
	e.client = e.start(deadPool)

	in := e.customersWrite(1, "can I change my booking?")
	require.Eventually(t, func() bool { return e.fake.InFlight() == 1 }, 10*time.Second, 5*time.Millisecond)
	// Crash: no connection of the first process works any more, and its
	// leadership is gone (as its lease would expire).
	close(crashed)
	_, err = e.pool.Exec(e.ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, appName)
	require.NoError(t, err)
	_, err = e.pool.Exec(e.ctx, `DELETE FROM `+e.schema+`.river_leader`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.fake.Answered() == 1 }, 10*time.Second, 10*time.Millisecond, "the first process's call finished")
	var state string
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT state FROM `+e.schema+`.river_job WHERE kind = 'conversa.reply'`).Scan(&state))
	require.Equal(t, "running", state, "the crashed process could not finish the turn")

	// A second process takes over once the turn's timeout has passed.
	time.Sleep(jobs.TurnTimeout(e.opts.llmTimeout))
	e.client = e.start(e.pool)
	e.waitTurnsDone(90 * time.Second)
	e.requireAnsweredOnce(in)
	require.EqualValues(t, 2, e.fake.Answered(), "the model was asked again; the customer got one reply")
}

func ptr[T any](v T) *T { return &v }
