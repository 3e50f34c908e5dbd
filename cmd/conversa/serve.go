package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"golang.org/x/term"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/twilio"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/migrations"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook"
	"github.com/conversa/conversa/webhook/console"
)

// Worker pool sizes. A turn waits on an LLM, a send on Twilio: both are I/O,
// and neither holds a database connection while it waits, so the pool is
// far smaller than the worker count: the reply queue runs LLM_CONCURRENCY
// turns, each holding a connection only for its short reads and its commit,
// and a serve and two work processes fit in Postgres's default 100
// connections. pool_max_conns in DATABASE_URL overrides it (see
// docs/operations.md, "Connections").
//
// `run` (edge and workers in one process) gives the HTTP edge a pool of its
// own, edgePoolConns of the 30: webhooks answer only after their commit, and
// with one shared pool hundreds of turns and sends queued ahead of them for
// connections (ingest fell from ~400/s to ~140/s during the sustained
// benchmark). The workers keep the rest.
//
// Twilio's status callbacks get statusPoolConns of the 30 for themselves
// (in `serve` too): Twilio tries a callback once, so one that waits for a
// connection behind a crowd of inbound webhooks until Twilio gives up is
// lost, and the message stays "queued" until reconciliation. Each callback
// looks its message up on its own connection before its group commit, so
// the pool is sized for that: in an overload run (300 inbound/s offered on
// this 2-core machine, every reply's callbacks plus 50/s more) 2 or 4
// connections still let callbacks wait past the sandbox's 5 s, 6 lost none.
const (
	sendWorkers      = 40
	defaultPoolConns = 30
	edgePoolConns    = 8
	statusPoolConns  = 6
)

type runCmd struct{}
type serveCmd struct{}
type workCmd struct{}

// Run migrates, then serves HTTP and works jobs in one process.
func (runCmd) Run(ctx context.Context, a *app) error {
	return a.serve(ctx, true, true, true)
}

// Run serves HTTP only; it inserts jobs and works none.
func (serveCmd) Run(ctx context.Context, a *app) error {
	return a.serve(ctx, false, true, false)
}

// Run works jobs only, with health and metrics on WORKER_HTTP_ADDR.
func (workCmd) Run(ctx context.Context, a *app) error {
	return a.serve(ctx, false, false, true)
}

// newLogger builds the process logger: text on a terminal, JSON otherwise.
func (a *app) newLogger() *slog.Logger {
	format := a.cfg.LogFormat
	if format == "" {
		format = "json"
		if f, ok := a.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(a.stderr, nil))
	}
	return slog.New(slog.NewJSONHandler(a.stderr, nil))
}

// openPool connects to DATABASE_URL. With create, a missing database is
// created first (so `make run` works on a fresh machine).
func (a *app) openPool(ctx context.Context, create bool, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := poolConfig(a.cfg.DatabaseURL, maxConns)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	err = pool.Ping(ctx)
	var pgErr *pgconn.PgError
	if create && errors.As(err, &pgErr) && pgErr.Code == "3D000" { // invalid_catalog_name
		pool.Close()
		if err := createDatabase(ctx, cfg.ConnConfig); err != nil {
			return nil, err
		}
		return a.openPool(ctx, false, maxConns)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// poolConfig parses DATABASE_URL with maxConns as the pool size, unless the
// URL sets pool_max_conns itself: several processes on one Postgres must be
// able to fit under its max_connections.
func poolConfig(databaseURL string, maxConns int32) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if maxConns > 0 && !strings.Contains(databaseURL, "pool_max_conns") {
		cfg.MaxConns = maxConns
	}
	return cfg, nil
}

// createDatabase creates the database cfg names, connecting to "postgres".
func createDatabase(ctx context.Context, cfg *pgx.ConnConfig) error {
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("create database %s: %w", cfg.Database, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{cfg.Database}.Sanitize())
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42P04") { // duplicate_database: a racing creator won
		return fmt.Errorf("create database %s: %w", cfg.Database, err)
	}
	return nil
}

// openRedis returns a Redis client, or nil when REDIS_URL is empty. A Redis
// that is down is not an error: everything works from Postgres without it.
func (a *app) openRedis() (*redis.Client, error) {
	if a.cfg.RedisURL == "" {
		return nil, nil
	}
	opts, err := redis.ParseURL(a.cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	opts.DialTimeout = 500 * time.Millisecond
	opts.ReadTimeout = 500 * time.Millisecond
	opts.WriteTimeout = 500 * time.Millisecond
	opts.MaxRetries = 1
	return redis.NewClient(opts), nil
}

// newLLM builds the agents' LLM provider from LLM_PROVIDER, behind the
// process's one gate: LLM_CONCURRENCY calls in flight and one shared
// back-off for every turn.
func (a *app) newLLM() (*agents.Gate, error) {
	var p agents.Provider = agents.NewOffline()
	if a.cfg.LLMProvider == "openai" {
		o, err := agents.NewOpenAI(agents.OpenAIConfig{
			BaseURL: a.cfg.OpenAIBaseURL,
			APIKey:  a.cfg.OpenAIAPIKey,
			Model:   a.cfg.LLMModel,
			Timeout: a.cfg.LLMTimeout,
		})
		if err != nil {
			return nil, err
		}
		p = o
	}
	return agents.NewGate(p, agents.GateConfig{Concurrency: a.cfg.LLMConcurrency}), nil
}

// twilioSender builds the Twilio sender for TWILIO_API_URL. "sandbox" starts
// the built-in sandbox Twilio on a free local port for this process.
// It also returns the API's URL (the sandbox's once started).
func (a *app) twilioSender(ctx context.Context, logger *slog.Logger) (*twilio.Client, string, error) {
	apiURL := a.cfg.TwilioAPIURL
	if apiURL == "sandbox" {
		u, err := faketwilio.StartSandbox(ctx, logger.With("component", "sandbox_twilio"))
		if err != nil {
			return nil, "", err
		}
		logger.Info("sandbox Twilio started: no message leaves this machine", "url", u)
		apiURL = u
	}
	tw, err := twilio.New(apiURL, a.cfg.TwilioTimeout)
	return tw, apiURL, err
}

// riverConfig is River tuned for Conversa (see README, "Latency and recovery").
func riverConfig(logger *slog.Logger, workers *river.Workers, reg prometheus.Registerer, replyWorkers int, reconcileAfter time.Duration) *river.Config {
	cfg := &river.Config{
		Logger: logger.With("component", "river"),
		Middleware: []rivertype.Middleware{
			// ScheduledAt within the debounce range stays "available", so a turn
			// starts when its quiet window ends instead of on the 5 s scheduler.
			&jobargs.ShortDelayMiddleware{MaxDelay: 5 * time.Second, Now: time.Now},
			jobs.NewJobMetricsMiddleware(reg),
		},
		// A crashed process's jobs are rescued after 20 s; the rescuer runs
		// every 30 s, so interrupted work resumes within about a minute.
		// JobTimeout stays below it, and TWILIO_TIMEOUT below JobTimeout.
		// A turn has its own, longer timeout (jobs.TurnTimeout from
		// LLM_TIMEOUT), which the rescuer honours: a crashed turn resumes
		// within LLM_TIMEOUT + 60 s.
		JobTimeout:           15 * time.Second,
		RescueStuckJobsAfter: 20 * time.Second,
		// Each hop (ingest → turn, turn → send) is a NOTIFY that wakes a
		// fetch. River drops insert notifications within FetchCooldown of the
		// previous one for a queue (the client-level value, also on an
		// insert-only client) and producers fetch at most once per cooldown,
		// so River's 100 ms default would add up to 100 ms per hop, and its
		// 1 s poll interval is the wait when a notification was dropped.
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: 100 * time.Millisecond,
	}
	if workers != nil {
		cfg.Workers = workers
		cfg.Queues = map[string]river.QueueConfig{
			jobargs.QueueReply: {MaxWorkers: replyWorkers},
			jobargs.QueueSend:  {MaxWorkers: sendWorkers},
			// Event webhooks: a slow receiver holds only these (and at
			// most jobs.EventEndpointConcurrency of them).
			jobargs.QueueEvents: {MaxWorkers: jobs.EventWorkers},
			// Reconciliation, stuck turns, cleanup: the leader inserts them
			// once per interval across the fleet.
			jobs.QueueMaintenance: {MaxWorkers: 2},
		}
		cfg.PeriodicJobs = jobs.PeriodicJobs(reconcileAfter)
	}
	return cfg
}

// serve runs the long-lived process: HTTP edge and/or River workers.
func (a *app) serve(ctx context.Context, migrate, httpEdge, work bool) error {
	logger := a.newLogger()
	if a.cfg.SecretKeyDefault {
		logger.Warn("SECRET_KEY is not set: Twilio auth tokens are sealed with the public development key. Set SECRET_KEY (32 bytes, hex or base64) before storing real credentials.")
	}
	if a.cfg.AdminTokenGenerated && httpEdge {
		// Printed to the terminal, not logged: logs never carry secrets.
		fmt.Fprintf(a.stdout, "ADMIN_TOKEN was not set; this run's admin token is: %s\n", a.cfg.AdminToken)
	}
	workConns := int32(defaultPoolConns)
	if httpEdge {
		workConns -= statusPoolConns
	}
	if httpEdge && work {
		workConns -= edgePoolConns
	}
	pool, err := a.openPool(ctx, migrate, workConns)
	if err != nil {
		return err
	}
	defer pool.Close()
	// edgeDB is the HTTP edge's pool: its own in `run` (see edgePoolConns);
	// statusDB is the status callbacks' (see statusPoolConns).
	edgeDB, statusDB := pool, pool
	if httpEdge && work {
		if edgeDB, err = a.openPool(ctx, false, edgePoolConns); err != nil {
			return err
		}
		defer edgeDB.Close()
	}
	if httpEdge {
		if statusDB, err = a.openPool(ctx, false, statusPoolConns); err != nil {
			return err
		}
		defer statusDB.Close()
	}
	if migrate {
		if _, err := migrations.Migrate(ctx, pool, false); err != nil {
			return err
		}
	}
	rdb, err := a.openRedis()
	if err != nil {
		return err
	}
	if rdb != nil {
		defer rdb.Close()
	}
	sealer, err := store.NewSealer(a.cfg.SecretKeys...)
	if err != nil {
		return err
	}

	// One registry per process, served at /metrics (no global registry).
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	jobMetrics := jobs.NewMetrics(reg)
	edgeMetrics := webhook.NewMetrics(reg, pool)

	var workers *river.Workers
	if work {
		llm, err := a.newLLM()
		if err != nil {
			return err
		}
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "conversa_llm_calls_in_flight", Help: "LLM calls at the provider now (at most LLM_CONCURRENCY).",
		}, func() float64 { return float64(llm.InFlight()) }))
		tw, apiURL, err := a.twilioSender(ctx, logger)
		if err != nil {
			return err
		}
		mediaDeps, err := a.newMedia(apiURL)
		if err != nil {
			return err
		}
		workers = river.NewWorkers()
		err = jobs.AddWorkers(workers, jobs.Deps{
			LLM:            llm,
			DB:             pool,
			Logger:         logger,
			Redis:          rdb,
			PublicBaseURL:  a.cfg.PublicBaseURL,
			Debounce:       a.cfg.Debounce,
			LLMTimeout:     a.cfg.LLMTimeout,
			LLMGiveUp:      a.cfg.LLMGiveUp,
			Metrics:        jobMetrics,
			Sealer:         sealer,
			Twilio:         tw,
			Media:          mediaDeps,
			Tools:          jobs.NewToolHTTP(a.cfg.ToolsAllowPrivate),
			Events:         jobs.NewEventHTTP(a.cfg.ToolsAllowPrivate),
			ReconcileAfter: a.cfg.ReconcileAfter,
		})
		if err != nil {
			return err
		}
	}
	riverClient, err := river.NewClient(riverpgxv5.New(pool), riverConfig(logger, workers, reg, a.cfg.LLMConcurrency, a.cfg.ReconcileAfter))
	if err != nil {
		return fmt.Errorf("river client: %w", err)
	}

	// Gin's debug mode prints every route to stdout at start: not for a server.
	gin.SetMode(gin.ReleaseMode)
	var handler http.Handler
	addr := a.cfg.WorkerHTTPAddr
	if httpEdge {
		addr = a.cfg.HTTPAddr
		// River UI's background services live as long as ctx.
		ui, err := webhook.NewRiverUI(ctx, riverClient, logger)
		if err != nil {
			return err
		}
		edge := webhook.NewHandler(webhook.Deps{
			DB:                edgeDB,
			StatusDB:          statusDB,
			River:             riverClient,
			Sealer:            sealer,
			Logger:            logger,
			Redis:             rdb,
			PublicBaseURL:     a.cfg.PublicBaseURL,
			Debounce:          a.cfg.Debounce,
			AdminToken:        a.cfg.AdminToken,
			RiverUI:           ui,
			Metrics:           edgeMetrics,
			MediaHosts:        a.mediaHosts(),
			ToolsAllowPrivate: a.cfg.ToolsAllowPrivate,
		})
		if err := console.Mount(edge, console.Deps{DB: edgeDB, River: riverClient, Logger: logger, AdminToken: a.cfg.AdminToken,
			Secure: strings.HasPrefix(a.cfg.PublicBaseURL, "https://")}); err != nil {
			return err
		}
		handler = edge
	} else {
		handler = webhook.NewWorkerHandler(webhook.Deps{DB: pool, Logger: logger, Redis: rdb, Metrics: edgeMetrics})
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- srv.Serve(ln) }()
	logger.Info("conversa started", "addr", ln.Addr().String(), "http", httpEdge, "work", work, "public_base_url", a.cfg.PublicBaseURL)

	if work {
		// River's own context is not ctx: shutdown is ordered below.
		if err := riverClient.Start(context.WithoutCancel(ctx)); err != nil {
			_ = srv.Close()
			return fmt.Errorf("start river: %w", err)
		}
		// The event relay stops with ctx: its transactions are all-or-nothing.
		relay := &jobs.EventRelay{DB: pool, River: riverClient, Logger: logger}
		go relay.Run(ctx)
	}

	select {
	case <-ctx.Done():
	case err := <-httpErr:
		if !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server failed", "error", err.Error())
		}
	}
	return a.shutdown(logger, srv, riverClient, work)
}

// shutdown drains HTTP, then soft-stops River (running jobs finish), then
// hard-stops it (their contexts are cancelled; River retries them later).
func (a *app) shutdown(logger *slog.Logger, srv *http.Server, riverClient *river.Client[pgx.Tx], work bool) error {
	logger.Info("shutting down: draining HTTP")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		logger.Warn("http drain incomplete", "error", err.Error())
	}
	if !work {
		return nil
	}
	logger.Info("shutting down: stopping River (soft)")
	softCtx, softCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer softCancel()
	if err := riverClient.Stop(softCtx); err != nil {
		logger.Warn("river soft stop timed out; cancelling running jobs", "error", err.Error())
		hardCtx, hardCancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer hardCancel()
		if err := riverClient.StopAndCancel(hardCtx); err != nil {
			return fmt.Errorf("river hard stop: %w", err)
		}
	}
	logger.Info("stopped")
	return nil
}
