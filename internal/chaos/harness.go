// Package chaos attacks Conversa's promise — no inbound message lost, no
// reply sent twice, every failure visible — the way Jepsen does: it runs the
// real binary (`conversa serve` and several `conversa work` as OS processes)
// on a fresh database with a private Redis, against the fake Twilio with
// faults drawn at random rates, posts signed webhooks with redeliveries,
// and meanwhile SIGKILLs workers and the server, stops Redis and (opt-in)
// restarts Postgres. After the queue drains, a checker reads the fake
// Twilio's record and the database and reports every violation.
//
// `make chaos` runs the full size; a reduced run is part of `make test`.
package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/pgcluster"
)

// Config sizes one chaos run.
type Config struct {
	// AdminURL is a Postgres server where the harness creates (and drops)
	// its own database. Ignored with PGRestart: the harness then runs its
	// own cluster.
	AdminURL string
	// Dir keeps the processes' logs (and a private cluster's data).
	Dir string
	// Out receives progress lines.
	Out io.Writer

	Messages   int           // inbound messages (distinct MessageSids)
	Rate       float64       // messages per second
	Contacts   int           // distinct customers
	Numbers    int           // the tenant's WhatsApp numbers
	Redeliver  float64       // share of messages posted twice (half of them concurrently)
	Workers    int           // `conversa work` processes
	WorkerKill int           // SIGKILLs of a worker process during the load
	ServeKill  int           // SIGKILLs of the serve process during the load
	RedisDown  time.Duration // a Redis outage of this length (0 = none)
	PGRestart  bool          // restart Postgres once (a private cluster)
	Faults     faketwilio.Rates
	// CallbackLoss is the share of status callbacks the fake Twilio never
	// posts (besides those lost while serve is down); reconciliation must
	// settle them all.
	CallbackLoss float64
	// ReconcileAfter is the processes' RECONCILE_AFTER, short so the drain
	// sees reconciliation finish.
	ReconcileAfter time.Duration
	// Inject are faults for the sends right after the middle of the load,
	// so a short run meets each kind at least once whatever the dice say.
	Inject []faketwilio.Fault
	// Drain bounds the wait, after the load, for the queue to empty.
	Drain time.Duration
	// Debounce is the processes' DEBOUNCE (0: every message answered at once).
	Debounce time.Duration
}

// Run performs one chaos run and returns its checked report. An error
// means the run itself could not be done; violations are in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	h := &harness{cfg: cfg, out: cfg.Out, started: time.Now()}
	defer h.cleanup()
	rep, err := h.run(ctx)
	if rep != nil && len(rep.Violations) > 0 && h.pg == nil {
		// Kept for a post-mortem; the next runs use new names.
		h.keepDB = true
		h.logf("violations: database %s kept for inspection (drop it when done)", h.dbName)
	}
	return rep, err
}

type harness struct {
	cfg     Config
	out     io.Writer
	started time.Time

	pg       *pgcluster.Cluster
	adminURL string
	dbName   string
	pool     *pgxpool.Pool
	fake     *faketwilio.Fake
	faults   *faketwilio.RandomFaults
	redis    *proc
	serve    *proc
	workers  []*proc
	env      []string
	baseURL  string
	admin    string
	tenantID string
	account  string
	token    string
	numbers  []string

	keepDB bool
	// unfinishedAtDrain is how many accepted replies had no final status
	// when the queue had drained, before reconciliation settled them.
	unfinishedAtDrain int

	mu     sync.Mutex
	events []string   // what the chaos schedule did, for the report
	sink   *eventSink // the tenant's event webhook endpoint
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.out, "[chaos %5.1fs] %s\n", time.Since(h.started).Seconds(), fmt.Sprintf(format, args...))
}

func (h *harness) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	h.mu.Lock()
	h.events = append(h.events, s)
	h.mu.Unlock()
	h.logf("%s", s)
}

func (h *harness) cleanup() {
	for _, w := range h.workers {
		w.stop()
	}
	if h.serve != nil {
		h.serve.stop()
	}
	if h.fake != nil {
		h.fake.Close()
	}
	if h.sink != nil {
		h.sink.srv.Close()
	}
	if h.redis != nil {
		h.redis.kill()
	}
	if h.pool != nil {
		h.pool.Close()
	}
	if h.dbName != "" && h.pg == nil && !h.keepDB {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, h.adminURL); err == nil {
			_, _ = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{h.dbName}.Sanitize()+` WITH (FORCE)`)
			_ = conn.Close(ctx)
		}
	}
	if h.pg != nil {
		h.pg.Stop()
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randDigits(n int) string {
	max := big.NewInt(1)
	for i := 0; i < n; i++ {
		max.Mul(max, big.NewInt(10))
	}
	v, _ := rand.Int(rand.Reader, max)
	return fmt.Sprintf("%0*d", n, v)
}

func (h *harness) run(ctx context.Context) (*Report, error) {
	if err := os.MkdirAll(h.cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	h.logf("building the conversa binary")
	bin, err := buildBinary(ctx, h.cfg.Dir)
	if err != nil {
		return nil, err
	}

	// Postgres: a database of our own, on a cluster of our own when it is to be restarted.
	h.adminURL = h.cfg.AdminURL
	if h.cfg.PGRestart {
		h.logf("starting a private Postgres cluster (it will be restarted)")
		h.pg, err = pgcluster.Start(ctx, h.cfg.Dir, pgcluster.Options{Bin: os.Getenv("CHAOS_PG_BIN"), Settings: []string{"fsync=off"}})
		if err != nil {
			return nil, err
		}
		h.adminURL = h.pg.AdminURL()
	}
	h.dbName = "conversa_chaos_" + randHex(4)
	conn, err := pgx.Connect(ctx, h.adminURL)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	_, err = conn.Exec(ctx, `CREATE DATABASE `+h.dbName)
	_ = conn.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	pcfg, err := pgxpool.ParseConfig(h.adminURL)
	if err != nil {
		return nil, err
	}
	pcfg.ConnConfig.Database = h.dbName
	pcfg.MaxConns = 4
	dbURL := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable&pool_max_conns=%d",
		pcfg.ConnConfig.User, pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, h.dbName, 20)
	if h.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return nil, err
	}

	// The fake Twilio, in this process, with faults at random rates.
	h.faults = faketwilio.NewRandomFaults(h.cfg.Faults, uint64(time.Now().UnixNano()))
	h.fake = faketwilio.New(faketwilio.Options{Chance: h.faults.Pick, CallbackDelay: 20 * time.Millisecond, HangFor: 30 * time.Second,
		CallbackLoss: h.cfg.CallbackLoss})
	twilioURL, err := h.fake.Start()
	if err != nil {
		return nil, err
	}

	// A private Redis: its outage must not touch the shared one.
	redisURL := ""
	if rs, err := exec.LookPath("redis-server"); err == nil {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		h.redis = &proc{name: "redis", bin: rs, log: filepath.Join(h.cfg.Dir, "redis.log"), ready: "tcp://" + addr(port),
			args: []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"}}
		if err := h.redis.start(); err != nil {
			return nil, err
		}
		if err := h.redis.waitReady(ctx, 10*time.Second); err != nil {
			return nil, err
		}
		redisURL = "redis://" + addr(port) + "/0"
	} else {
		// Never the shared Redis: without redis-server the run goes without.
		h.note("no redis-server: running without Redis, so no Redis outage")
		h.cfg.RedisDown = 0
	}

	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	h.baseURL = "http://" + addr(httpPort)
	h.admin = randHex(16)
	h.env = []string{
		"DATABASE_URL=" + dbURL,
		"REDIS_URL=" + redisURL,
		"HTTP_ADDR=" + addr(httpPort),
		"PUBLIC_BASE_URL=" + h.baseURL,
		"TWILIO_API_URL=" + twilioURL,
		"TWILIO_TIMEOUT=2s",
		"DEBOUNCE=" + h.cfg.Debounce.String(),
		"RECONCILE_AFTER=" + max(h.cfg.ReconcileAfter, 2*time.Second).String(),
		"LLM_PROVIDER=offline",
		// The offline agent answers at once. A turn whose worker is killed
		// mid-run waits for River's rescuer: up to the turn's timeout plus
		// the rescuer's 30 s (jobs.TurnTimeout). With the default 60 s that
		// is up to about 2 minutes, past Drain; with 5 s, under a minute.
		"LLM_TIMEOUT=5s",
		"ADMIN_TOKEN=" + h.admin,
		"SECRET_KEY=" + randHex(32),
		"LOG_FORMAT=json",
		"PATH=" + os.Getenv("PATH"),
		// The event webhook endpoint listens on loopback.
		"TOOLS_ALLOW_PRIVATE=1",
	}

	// The tenant, its account and numbers, and credits, through the CLI.
	if _, err := runOnce(ctx, bin, h.env, "migrate"); err != nil {
		return nil, err
	}
	out, err := runOnce(ctx, bin, h.env, "tenant", "create", "--name", "chaos", "--json")
	if err != nil {
		return nil, err
	}
	var tenant struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &tenant); err != nil {
		return nil, fmt.Errorf("tenant create output %q: %w", out, err)
	}
	h.tenantID, h.account, h.token = tenant.ID, "AC"+randHex(16), randHex(16)
	args := []string{"account", "add", "--tenant", h.tenantID, "--sid", h.account, "--token", h.token}
	for i := 0; i < h.cfg.Numbers; i++ {
		n := "whatsapp:+1415" + randDigits(7)
		h.numbers = append(h.numbers, n)
		args = append(args, "--number", n)
	}
	if _, err := runOnce(ctx, bin, h.env, args...); err != nil {
		return nil, err
	}
	if _, err := runOnce(ctx, bin, h.env, "credits", "add", "--tenant", h.tenantID, "--amount", strconv.Itoa(10*h.cfg.Messages+1000)); err != nil {
		return nil, err
	}
	h.fake.AddAccount(h.account, h.token)
	// Every event goes to an endpoint that fails a tenth of the time.
	h.sink = newEventSink(0.10)
	if err := h.sink.register(ctx, h); err != nil {
		return nil, err
	}

	// The processes.
	h.serve = &proc{name: "serve", bin: bin, args: []string{"serve"}, env: h.env,
		log: filepath.Join(h.cfg.Dir, "serve.log"), ready: h.baseURL + "/readyz"}
	if err := h.serve.start(); err != nil {
		return nil, err
	}
	for i := 0; i < h.cfg.Workers; i++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		w := &proc{name: fmt.Sprintf("work-%d", i+1), bin: bin, args: []string{"work"},
			env: append(append([]string(nil), h.env...), "WORKER_HTTP_ADDR="+addr(port)),
			log: filepath.Join(h.cfg.Dir, fmt.Sprintf("work-%d.log", i+1)), ready: "http://" + addr(port) + "/readyz"}
		if err := w.start(); err != nil {
			return nil, err
		}
		h.workers = append(h.workers, w)
	}
	for _, p := range append([]*proc{h.serve}, h.workers...) {
		if err := p.waitReady(ctx, 30*time.Second); err != nil {
			return nil, err
		}
	}
	h.logf("serve and %d workers ready; sending %d messages at %.0f/s", len(h.workers), h.cfg.Messages, h.cfg.Rate)

	// Load and, alongside it, the faults.
	loadDur := time.Duration(float64(h.cfg.Messages) / h.cfg.Rate * float64(time.Second))
	l := newLoad(h)
	chaosCtx, stopChaos := context.WithCancel(ctx)
	chaosDone := make(chan error, 1)
	go func() { chaosDone <- h.schedule(chaosCtx, loadDur) }()
	l.run(ctx)
	stopChaos()
	if err := <-chaosDone; err != nil {
		return nil, err
	}
	h.faults.SetOn(false)
	h.logf("load done: %d messages acknowledged; faults off; draining", len(l.acked))

	drained, left, err := h.drain(ctx)
	if err != nil {
		return nil, err
	}
	// The last status callbacks are a few tens of milliseconds behind.
	time.Sleep(time.Second)
	h.logf("drained=%v (%d jobs left); waiting for reconciliation", drained, left)
	before, after, err := h.awaitFinalStatuses(ctx)
	if err != nil {
		return nil, err
	}
	h.unfinishedAtDrain = before
	h.logf("accepted replies without a final status: %d at the drain, %d after reconciliation; checking", before, after)
	return h.check(ctx, l, drained)
}

// periodicKinds are the periodic jobs: always due again, never "drained".
var periodicKinds = []string{"conversa.reconcile", "conversa.stuck_turns", "conversa.idempotency_cleanup",
	"conversa.retention", "conversa.event_prune"}

// unfinishedSQL counts accepted replies without a final status, by the
// checker's own reading of Twilio's statuses.
const unfinishedSQL = `SELECT count(*) FROM messages WHERE direction = 'outbound' AND twilio_sid IS NOT NULL
	AND status IN ('queued', 'accepted', 'scheduled', 'sending', 'sent')`

// awaitFinalStatuses waits, up to Drain, until every reply Twilio accepted
// has a final status (reconciliation asks Twilio for those whose callbacks
// were lost), and returns the count at the start and at the end.
func (h *harness) awaitFinalStatuses(ctx context.Context) (before, after int, err error) {
	deadline := time.Now().Add(h.cfg.Drain)
	if err := h.pool.QueryRow(ctx, unfinishedSQL).Scan(&before); err != nil {
		return 0, 0, fmt.Errorf("unfinished replies: %w", err)
	}
	after = before
	for after > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return before, after, ctx.Err()
		case <-time.After(time.Second):
		}
		if err := h.pool.QueryRow(ctx, unfinishedSQL).Scan(&after); err != nil {
			return before, after, fmt.Errorf("unfinished replies: %w", err)
		}
	}
	return before, after, nil
}

// drain waits until no conversa.* job but the periodic ones is waiting or
// running, up to Drain.
func (h *harness) drain(ctx context.Context) (bool, int, error) {
	deadline := time.Now().Add(h.cfg.Drain)
	var left int
	for {
		err := h.pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind LIKE 'conversa.%' AND kind <> ALL($1)
			AND state IN ('available', 'running', 'retryable', 'scheduled', 'pending')`, periodicKinds).Scan(&left)
		if err != nil && time.Now().After(deadline) {
			return false, -1, fmt.Errorf("drain: %w", err)
		}
		if err == nil && left == 0 {
			return true, 0, nil
		}
		if time.Now().After(deadline) {
			return false, left, nil
		}
		select {
		case <-ctx.Done():
			return false, left, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// schedule injects the process faults spread over the load's duration, and
// leaves everything running when it returns.
func (h *harness) schedule(ctx context.Context, loadDur time.Duration) error {
	type step struct {
		at time.Duration
		do func() error
	}
	var steps []step
	// A step that started finishes (a killed process is restarted) even
	// when the load ends meanwhile.
	sctx := context.WithoutCancel(ctx)
	at := func(frac float64) time.Duration { return time.Duration(frac * float64(loadDur)) }
	// Worker kills early and spread out, so the rescued jobs finish well
	// before the drain deadline.
	for i := 0; i < h.cfg.WorkerKill; i++ {
		i := i
		steps = append(steps, step{at(0.1 + 0.55*float64(i)/float64(max(h.cfg.WorkerKill, 1))), func() error {
			w := h.workers[i%len(h.workers)]
			w.kill()
			h.note("SIGKILL %s", w.name)
			time.Sleep(time.Second)
			if err := w.start(); err != nil {
				return err
			}
			h.note("restarted %s", w.name)
			return w.waitReady(sctx, 30*time.Second)
		}})
	}
	for i := 0; i < h.cfg.ServeKill; i++ {
		steps = append(steps, step{at(0.3 + 0.4*float64(i)/float64(max(h.cfg.ServeKill, 1))), func() error {
			h.serve.kill()
			h.note("SIGKILL serve")
			time.Sleep(1500 * time.Millisecond)
			if err := h.serve.start(); err != nil {
				return err
			}
			err := h.serve.waitReady(sctx, 30*time.Second)
			h.note("restarted serve")
			return err
		}})
	}
	if h.cfg.RedisDown > 0 {
		steps = append(steps, step{at(0.2), func() error {
			h.redis.kill()
			h.note("Redis down for %s", h.cfg.RedisDown)
			time.Sleep(h.cfg.RedisDown / 2)
			h.note("serve /readyz during the Redis outage: %s", h.readyz())
			time.Sleep(h.cfg.RedisDown - h.cfg.RedisDown/2)
			if err := h.redis.start(); err != nil {
				return err
			}
			err := h.redis.waitReady(sctx, 10*time.Second)
			h.note("Redis back (empty)")
			return err
		}})
	}
	if len(h.cfg.Inject) > 0 {
		steps = append(steps, step{at(0.5), func() error {
			for _, f := range h.cfg.Inject {
				h.fake.Inject(f)
				h.note("inject %s x%d", f.Kind, max(f.Times, 1))
			}
			return nil
		}})
	}
	if h.cfg.PGRestart && h.pg != nil {
		steps = append(steps, step{at(0.5), func() error {
			h.note("Postgres restart (immediate stop, start)")
			err := h.pg.Restart(sctx)
			h.note("Postgres back")
			return err
		}})
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(steps))
	start := time.Now()
	for _, s := range steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(time.Until(start.Add(s.at))):
			case <-ctx.Done():
				return
			}
			if err := s.do(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// readyz is the serve process's readiness as an operator's probe sees it.
func (h *harness) readyz() string {
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Get(h.baseURL + "/readyz")
	if err != nil {
		return "no answer"
	}
	defer resp.Body.Close()
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return fmt.Sprintf("%d postgres=%s redis=%s", resp.StatusCode, body["postgres"], body["redis"])
}
