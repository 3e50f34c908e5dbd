package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/conversa/conversa/internal/faketwilio"
)

// pipeline is a running `conversa run` process (built from this tree) with
// the fake Twilio in this process, so reply times are read off the fake's
// own record of accepted sends.
type pipeline struct {
	cmd    *exec.Cmd
	base   string
	fake   *faketwilio.Fake
	logDst *os.File
}

// startPipeline builds bin/conversa and runs it against the bench database,
// with env added to (or overriding) the figures' common environment.
func (b *bench) startPipeline(ctx context.Context, env ...string) (*pipeline, error) {
	// Each figure starts from an empty queue (the ingest figure leaves its
	// turn jobs unworked) and with this process's idle connections closed,
	// so the server has the database's connections to itself.
	if _, err := b.pool.Exec(ctx, `DELETE FROM river_job`); err != nil {
		return nil, err
	}
	b.pool.Reset()
	bin, err := filepath.Abs("bin/conversa-bench")
	if err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/conversa").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build: %w: %s", err, out)
	}
	fake := faketwilio.New(faketwilio.Options{AnyAccount: true, CallbackDelay: 50 * time.Millisecond})
	furl, err := fake.Start()
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	waddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logf, err := os.CreateTemp("", "conversa-bench-*.log")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "run")
	cmd.Env = append(os.Environ(),
		"DATABASE_URL="+b.url,
		"HTTP_ADDR="+addr,
		"WORKER_HTTP_ADDR="+waddr,
		"PUBLIC_BASE_URL=http://"+addr,
		"TWILIO_API_URL="+furl,
		"DEBOUNCE=0",
		"LOG_FORMAT=json",
		"LLM_PROVIDER=offline",
		"SECRET_KEY="+fmt.Sprintf("%x", secretKey),
		"ADMIN_TOKEN=bench",
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	fmt.Printf("  (server log: %s)\n", logf.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &pipeline{cmd: cmd, base: "http://" + addr, fake: fake, logDst: logf}
	for i := 0; ; i++ {
		resp, err := http.Get(p.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i > 300 {
			p.stop()
			return nil, fmt.Errorf("conversa run not ready after 30 s (log: %s)", logf.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p, nil
}

func (p *pipeline) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	p.fake.Close()
	p.logDst.Close()
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// replyTimes maps each contact to when the fake accepted the reply to it.
func (p *pipeline) replyTimes() map[string]time.Time {
	out := map[string]time.Time{}
	for _, m := range p.fake.Accepted("") {
		if _, ok := out[m.To]; !ok {
			out[m.To] = m.Created
		}
	}
	return out
}

// waitReplies waits until n replies have been accepted, or timeout.
func (p *pipeline) waitReplies(n int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		got := len(p.fake.Accepted(""))
		if got >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// paced posts n messages at rate per second, each from a new contact, and
// returns when each was posted (by contact).
func paced(ctx context.Context, s *sender, n int, rate float64) (map[string]time.Time, error) {
	sent := make(map[string]time.Time, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		contact := "whatsapp:" + randPhone("+1556")
		number := s.tenant.numbers[i%len(s.tenant.numbers)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			if _, err := s.post(ctx, contact, number); err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			mu.Lock()
			sent[contact] = t0
			mu.Unlock()
		}()
	}
	wg.Wait()
	return sent, firstErr
}

// latencies pairs each posted message with its reply's acceptance time.
func latencies(sent, replied map[string]time.Time) ([]time.Duration, int) {
	var out []time.Duration
	missing := 0
	for c, t0 := range sent {
		t1, ok := replied[c]
		if !ok {
			missing++
			continue
		}
		out = append(out, t1.Sub(t0))
	}
	return out, missing
}

// e2eFigure: webhook received → reply accepted by Twilio, at a steady 50/s.
func (b *bench) e2eFigure(ctx context.Context, r *report) error {
	p, err := b.startPipeline(ctx)
	if err != nil {
		return err
	}
	defer p.stop()
	s := newSender(p.base, p.base, b.tenant)
	// Warm up for 5 s at the measured rate: connections, caches, and the
	// first autovacuum/analyze of the new tables. Not counted.
	fmt.Println("e2e: warm-up, 250 messages at 50/s ...")
	if _, err := paced(ctx, s, 250, 50); err != nil {
		return err
	}
	p.waitReplies(250, 30*time.Second)
	for _, rate := range []float64{50, 200} {
		before := len(p.fake.Accepted(""))
		n := int(rate * 20)
		fmt.Printf("e2e: %d messages at %.0f/s ...\n", n, rate)
		sent, err := paced(ctx, s, n, rate)
		if err != nil {
			return err
		}
		p.waitReplies(before+n, 60*time.Second)
		lat, missing := latencies(sent, p.replyTimes())
		pc := percentiles(lat)
		if rate == 50 {
			r.add("2. End to end at 50 messages/s (webhook → send reaches Twilio; offline agent, DEBOUNCE=0)", [][2]string{
				{"messages", fmt.Sprintf("%d (%d without a reply within 60 s)", n, missing)},
				{"p50 (goal ≤ 10 ms)", ms(pc[50])},
				{"p90", ms(pc[90])},
				{"p99 (goal ≤ 50 ms)", ms(pc[99])},
			})
		}
		r.series = append(r.series, loadPoint{label: fmt.Sprintf("e2e %.0f/s", rate), rate: rate, p: pc})
	}
	return nil
}

// sustainedFigure: 2,000 messages as fast as they come over 10 numbers,
// fully replied; also samples the process's RSS.
func (b *bench) sustainedFigure(ctx context.Context, r *report) error {
	p, err := b.startPipeline(ctx)
	if err != nil {
		return err
	}
	defer p.stop()
	run, err := b.sustained(ctx, p)
	if err != nil {
		return err
	}
	r.add("3. Sustained pipeline (2,000 messages, 10 WhatsApp numbers, ingest + turn + send)", run.rows())
	return nil
}

// sustainedMessages is the size of the sustained run (figures 3 and 7).
const sustainedMessages = 2000

// sustainedRun is what one sustained run measured.
type sustainedRun struct {
	n, got int
	// ingested: all messages answered by the webhook; last: the last reply
	// accepted by Twilio; waited: until waiting for replies ended. All from
	// the run's start.
	ingested, last, waited time.Duration
	peakRSS                float64
	load                   [3]float64 // load average when the run ended
}

// sustained posts sustainedMessages messages from 64 concurrent senders over
// the tenant's numbers, each from a new contact, and waits for every reply.
func (b *bench) sustained(ctx context.Context, p *pipeline) (sustainedRun, error) {
	s := newSender(p.base, p.base, b.tenant)
	n := sustainedMessages
	fmt.Printf("sustained: %d messages, 64 senders, %d numbers ...\n", n, len(b.tenant.numbers))
	var peak float64
	stopRSS := sampleRSS(p.cmd.Process.Pid, &peak)
	start := time.Now()
	var wg sync.WaitGroup
	jobsCh := make(chan int)
	errCh := make(chan error, 64)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobsCh {
				if _, err := s.post(ctx, "whatsapp:"+randPhone("+1557"), s.tenant.numbers[i%len(s.tenant.numbers)]); err != nil {
					errCh <- err
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobsCh <- i
	}
	close(jobsCh)
	wg.Wait()
	run := sustainedRun{n: n, ingested: time.Since(start)}
	run.got = p.waitReplies(n, 120*time.Second)
	run.waited = time.Since(start)
	stopRSS()
	run.peakRSS = peak
	run.load = loadAvg()
	select {
	case err := <-errCh:
		return run, err
	default:
	}
	var last time.Time
	for _, m := range p.fake.Accepted("") {
		if m.Created.After(last) {
			last = m.Created
		}
	}
	run.last = last.Sub(start)
	return run, nil
}

// rate is fully replied messages per second.
func (r sustainedRun) rate() float64 { return float64(r.got) / r.last.Seconds() }

func (r sustainedRun) rows() [][2]string {
	return [][2]string{
		{"replies accepted by Twilio", fmt.Sprintf("%d of %d", r.got, r.n)},
		{fmt.Sprintf("ingest of all %d", r.n), fmt.Sprintf("%.2f s (%.0f/s)", r.ingested.Seconds(), float64(r.n)/r.ingested.Seconds())},
		{"fully replied throughput (goal ≥ 600/s)", fmt.Sprintf("%.0f messages/s (last reply after %.2f s; waited %.1f s)", r.rate(), r.last.Seconds(), r.waited.Seconds())},
		{"peak RSS of conversa run during it (goal ≤ 150 MB)", fmt.Sprintf("%.0f MB", r.peakRSS)},
		{"machine load average at the end (1, 5, 15 min; other work on the machine shows here)", fmt.Sprintf("%.2f, %.2f, %.2f", r.load[0], r.load[1], r.load[2])},
	}
}

// sampleRSS records the peak RSS of pid every 100 ms until stopped.
func sampleRSS(pid int, peak *float64) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v := rssMB(pid); v > *peak {
				*peak = v
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// memoryFigure: RSS over a soak at a steady moderate load.
func (b *bench) memoryFigure(ctx context.Context, r *report) error {
	p, err := b.startPipeline(ctx)
	if err != nil {
		return err
	}
	defer p.stop()
	s := newSender(p.base, p.base, b.tenant)
	soak, rate := b.soak, b.soakRate
	fmt.Printf("memory: %s soak at %.0f messages/s ...\n", soak, rate)
	var samples []float64
	start := time.Now()
	for time.Since(start) < soak {
		if _, err := paced(ctx, s, int(rate*10), rate); err != nil { // 10 s per round
			return err
		}
		samples = append(samples, rssMB(p.cmd.Process.Pid))
	}
	if len(samples) < 2 {
		return fmt.Errorf("soak too short")
	}
	first, lastS, peak := samples[0], samples[len(samples)-1], 0.0
	for _, v := range samples {
		if v > peak {
			peak = v
		}
	}
	r.add(fmt.Sprintf("4. Memory over a %s soak at %.0f messages/s", soak, rate), [][2]string{
		{"RSS after the first 10 s", fmt.Sprintf("%.0f MB", first)},
		{"RSS half way", fmt.Sprintf("%.0f MB", samples[len(samples)/2])},
		{"RSS at the end", fmt.Sprintf("%.0f MB", lastS)},
		{"peak RSS (goal ≤ 150 MB)", fmt.Sprintf("%.0f MB", peak)},
		{"growth first → last (goal: none)", fmt.Sprintf("%+.0f MB over %d samples", lastS-first, len(samples))},
	})
	return nil
}

// curveFigure: webhook p99 and turn latency as stored messages grow.
func (b *bench) curveFigure(ctx context.Context, r *report) error {
	var rows [][2]string
	stored := 0
	for _, target := range []int{1_000, 100_000, 1_000_000} {
		fmt.Printf("curve: seeding to %d stored messages ...\n", target)
		if err := b.seed(ctx, target-stored); err != nil {
			return err
		}
		stored = target
		if _, err := b.pool.Exec(ctx, `ANALYZE`); err != nil {
			return err
		}
		p, err := b.startPipeline(ctx)
		if err != nil {
			return err
		}
		s := newSender(p.base, p.base, b.tenant)
		lat, err := s.load(ctx, 5*time.Second, 32)
		if err != nil {
			p.stop()
			return err
		}
		// Turn latency at a low rate, after the ingest load has drained.
		p.waitReplies(len(lat), 60*time.Second)
		before := len(p.fake.Accepted(""))
		sent, err := paced(ctx, s, 100, 20)
		if err != nil {
			p.stop()
			return err
		}
		p.waitReplies(before+100, 30*time.Second)
		turn, _ := latencies(sent, p.replyTimes())
		p.stop()
		wp, tp := percentiles(lat), percentiles(turn)
		rows = append(rows, [2]string{fmt.Sprintf("%d stored: webhook p99 / reply p50, p99", target),
			fmt.Sprintf("%s / %s, %s", ms(wp[99]), ms(tp[50]), ms(tp[99]))})
	}
	r.add("5. Cost curve (latency as stored messages grow)", rows)
	return nil
}

// seed adds n inbound messages spread over many conversations of a separate
// tenant, as history.
func (b *bench) seed(ctx context.Context, n int) error {
	if n <= 0 {
		return nil
	}
	t, err := b.newTenant(ctx, 1, 0)
	if err != nil {
		return err
	}
	_, err = b.pool.Exec(ctx, `
		WITH ch AS (SELECT id FROM channels WHERE tenant_id = $1),
		c AS (
			INSERT INTO contacts (tenant_id, address)
			SELECT $1, 'whatsapp:+1999' || lpad(g::text, 7, '0') FROM generate_series(1, greatest($2 / 50, 1)) g
			RETURNING id
		), conv AS (
			INSERT INTO conversations (tenant_id, channel_id, contact_id)
			SELECT $1, ch.id, c.id FROM c, ch RETURNING id
		)
		INSERT INTO messages (tenant_id, conversation_id, direction, author, body, status, twilio_sid)
		SELECT $1, conv.id, 'inbound', 'contact', 'seeded history message', 'received', 'SMseed' || $3 || '-' || conv.id || '-' || g
		FROM conv, generate_series(1, 50) g`, t.id, n, randHex(4))
	return err
}
