package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/conversa/conversa/internal/twiliohook"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/migrations"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook"
)

const benchDB = "conversa_bench"

// secretKey seals the bench tenant's token; the bench database is throwaway.
var secretKey = []byte("bench-key-0123456789abcdef012345")

// bench owns a fresh database with one tenant and its numbers.
type bench struct {
	adminURL string
	url      string
	pool     *pgxpool.Pool
	sealer   *store.Sealer
	tenant   benchTenant
	soak     time.Duration
	soakRate float64
	llmRate  float64
	// trackPlanning has figure 7 count plannings per statement
	// (pg_stat_statements.track_planning), which slows Postgres down.
	trackPlanning bool
}

type benchTenant struct {
	id, apiKey, accountSID, token string
	numbers                       []string // WhatsApp numbers
}

func newBench(ctx context.Context, adminURL string) (*bench, error) {
	b := &bench{adminURL: adminURL}
	var err error
	if b.sealer, err = store.NewSealer(secretKey); err != nil {
		return nil, err
	}
	return b, b.fresh(ctx)
}

// fresh gives the next figure a new database: migrated, with one tenant of
// 10 WhatsApp numbers and plenty of credits. Figures never see each other's
// rows, dead tuples or queued jobs.
func (b *bench) fresh(ctx context.Context) error {
	if b.pool != nil {
		b.pool.Close()
		b.pool = nil
	}
	conn, err := pgx.Connect(ctx, b.adminURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`DROP DATABASE IF EXISTS ` + benchDB + ` WITH (FORCE)`,
		`CREATE DATABASE ` + benchDB,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	cfg, err := pgxpool.ParseConfig(b.adminURL)
	if err != nil {
		return err
	}
	cfg.ConnConfig.Database = benchDB
	cfg.MaxConns = 48
	b.url = strings.Replace(b.adminURL, "/"+conn.Config().Database, "/"+benchDB, 1)
	if b.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return err
	}
	if _, err := migrations.Migrate(ctx, b.pool, false); err != nil {
		return err
	}
	b.tenant, err = b.newTenant(ctx, 10, 1_000_000_000)
	return err
}

func (b *bench) close() {
	if b.pool != nil {
		b.pool.Close()
	}
}

// newTenant creates a tenant with n WhatsApp numbers and credits.
func (b *bench) newTenant(ctx context.Context, n int, credits int64) (benchTenant, error) {
	t, keys, err := store.CreateTenant(ctx, b.pool, b.sealer, "bench-"+randHex(4))
	if err != nil {
		return benchTenant{}, err
	}
	bt := benchTenant{id: t.ID, apiKey: keys.APIKey, accountSID: "AC" + randHex(16), token: randHex(16)}
	for i := 0; i < n; i++ {
		bt.numbers = append(bt.numbers, "whatsapp:"+randPhone("+1415"))
	}
	sealed, err := b.sealer.Seal(bt.token)
	if err != nil {
		return bt, err
	}
	if _, err := store.AddAccount(ctx, b.pool, bt.id, bt.accountSID, sealed, bt.numbers); err != nil {
		return bt, err
	}
	if credits > 0 {
		_, err = store.AddCredits(ctx, b.pool, bt.id, credits)
	}
	return bt, err
}

// ceiling runs pgbench with the one-commit-per-message script and returns tps.
func (b *bench) ceiling(ctx context.Context, dur time.Duration, clients int) (float64, error) {
	if _, err := b.pool.Exec(ctx, `
		CREATE TABLE IF NOT EXISTS ceiling_conversations (id bigint PRIMARY KEY, last_inbound_at timestamptz, version bigint NOT NULL DEFAULT 1);
		CREATE TABLE IF NOT EXISTS ceiling_messages (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			conversation_id bigint NOT NULL, body text NOT NULL, twilio_sid text UNIQUE, created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, err
	}
	script, err := filepath.Abs(filepath.Join(sourceDir(), "ceiling.sql"))
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, "pgbench", "-n", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", "2",
		"-T", strconv.Itoa(int(dur.Seconds())), "-f", script, b.url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %w: %s", err, out)
	}
	m := regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench: no tps in output: %s", out)
	}
	if _, err := b.pool.Exec(ctx, `DELETE FROM river_job WHERE kind = 'ceiling.reply'; TRUNCATE ceiling_messages`); err != nil {
		return 0, err
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// sourceDir is this package's directory (make bench runs from the repo root).
func sourceDir() string {
	if _, err := os.Stat("internal/bench/ceiling.sql"); err == nil {
		return "internal/bench"
	}
	return "."
}

// edgeServer serves the webhook handler over real HTTP on loopback, with an
// insert-only River client, as `conversa serve` does.
func (b *bench) edgeServer(ctx context.Context) (string, func(), error) {
	rc, err := river.NewClient(riverpgxv5.New(b.pool), &river.Config{
		Middleware: []rivertype.Middleware{&jobargs.ShortDelayMiddleware{MaxDelay: 5 * time.Second, Now: time.Now}},
	})
	if err != nil {
		return "", nil, err
	}
	h := webhook.NewHandler(webhook.Deps{
		DB: b.pool, River: rc, Sealer: b.sealer,
		Logger:        slog.New(slog.NewJSONHandler(io.Discard, nil)),
		PublicBaseURL: "http://bench.local",
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// sender posts signed inbound webhooks like Twilio does.
type sender struct {
	poster  *twiliohook.Poster
	tenant  benchTenant
	counter atomic.Int64
	prefix  string
}

func newSender(target, signAs string, t benchTenant) *sender {
	tr := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 30 * time.Second}
	return &sender{
		poster: &twiliohook.Poster{HC: &http.Client{Transport: tr, Timeout: 30 * time.Second}, Target: target, PublicBaseURL: signAs},
		tenant: t, prefix: randHex(4),
	}
}

// post sends one inbound message from contact c to number n and returns its latency.
func (s *sender) post(ctx context.Context, contact string, number string) (time.Duration, error) {
	i := s.counter.Add(1)
	sid := fmt.Sprintf("SM%s%024d", s.prefix, i)
	form := url.Values{
		"MessageSid": {sid}, "AccountSid": {s.tenant.accountSID}, "From": {contact}, "To": {number},
		"Body": {"Hello, what time do you open tomorrow?"}, "NumMedia": {"0"}, "ProfileName": {"Bench"},
	}
	start := time.Now()
	code, err := s.poster.Post(ctx, "/twilio/inbound", s.tenant.token, form)
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("inbound answered %d", code)
	}
	return time.Since(start), nil
}

// load runs conc closed-loop senders for dur, each its own contact, and
// returns per-request latencies.
func (s *sender) load(ctx context.Context, dur time.Duration, conc int) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			contact := "whatsapp:" + randPhone("+1555")
			for n := 0; ctx.Err() == nil; n++ {
				// Each sender writes as a few contacts, to many numbers.
				if n%20 == 0 {
					contact = "whatsapp:" + randPhone("+1555")
				}
				d, err := s.post(ctx, contact, s.tenant.numbers[n%len(s.tenant.numbers)])
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
					}
					break
				}
				lat = append(lat, d)
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all, firstErr
}

func (b *bench) ingestFigure(ctx context.Context, r *report, dur time.Duration, conc int) error {
	fmt.Printf("ingest: pgbench ceiling, %d clients, %s ...\n", conc, dur)
	ceiling, err := b.ceiling(ctx, dur, conc)
	if err != nil {
		return err
	}
	fmt.Printf("ingest: webhooks, %d concurrent senders, %s ...\n", conc, dur)
	target, stop, err := b.edgeServer(ctx)
	if err != nil {
		return err
	}
	defer stop()
	s := newSender(target, "http://bench.local", b.tenant)
	lat, err := s.load(ctx, dur, conc)
	if err != nil {
		return err
	}
	tps := float64(len(lat)) / dur.Seconds()
	p := percentiles(lat)
	r.add("1. Ingest (signed webhook → committed message + River job)", [][2]string{
		{"pgbench ceiling (one commit per message)", fmt.Sprintf("%.0f tps", ceiling)},
		{fmt.Sprintf("webhook throughput, %d senders", conc), fmt.Sprintf("%.0f req/s", tps)},
		{"ratio to ceiling (goal ≥ 2.0×)", fmt.Sprintf("%.2f×", tps/ceiling)},
		{"webhook latency p50 / p99", fmt.Sprintf("%s / %s", ms(p[50]), ms(p[99]))},
	})
	r.series = append(r.series, loadPoint{label: fmt.Sprintf("ingest c=%d", conc), rate: tps, p: p})
	return nil
}

// percentiles returns p50, p90, p99, p100 of lat.
func percentiles(lat []time.Duration) map[int]time.Duration {
	out := map[int]time.Duration{}
	if len(lat) == 0 {
		return out
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	for _, q := range []int{50, 90, 99, 100} {
		i := (len(s)*q)/100 - 1
		if i < 0 {
			i = 0
		}
		out[q] = s[i]
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randPhone(prefix string) string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1e7))
	return fmt.Sprintf("%s%07d", prefix, n.Int64())
}

// rssMB reads a process's resident set size from /proc.
func rssMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
