package agents

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/sony/gobreaker/v2"
)

// GateConfig configures a Gate.
type GateConfig struct {
	// Concurrency is the most calls in flight at once (LLM_CONCURRENCY);
	// a call past it waits for a slot. Default 256.
	Concurrency int
	// Failures is the run of consecutive failed calls (5xx, connection
	// errors, timeouts) that opens the back-off. Default 3.
	Failures uint32
	// OpenFor is how long the back-off stays open after such a run, before
	// one probe call may try the provider again. Default 10 s.
	OpenFor time.Duration
	// RateLimitWait is the back-off after a 429 that carries no
	// Retry-After. Default 5 s.
	RateLimitWait time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Gate is one provider as every turn of a process shares it: at most
// Concurrency calls in flight, and one back-off for all of them. A 429
// holds every call until its Retry-After has passed, then lets one probe
// call through until one is not refused; a run of failures
// (5xx, refused connections, timeouts) opens a circuit breaker, after which
// one probe call at a time tries the provider until one succeeds. A call
// the gate holds back, or one the provider refused for being overloaded or
// down, returns an *UnavailableError saying how long to wait: the caller
// waits (the turn is snoozed) rather than counting it as its own failure.
type Gate struct {
	p       Provider
	cfg     GateConfig
	slots   chan struct{}
	breaker *gobreaker.CircuitBreaker[struct{}]

	mu        sync.Mutex
	heldUntil time.Time // a 429's Retry-After
	// limited is set by a 429 and cleared by any other outcome; while it
	// is set, once the hold has passed, one probe call at a time tries.
	limited, probing bool

	inFlight    atomic.Int64
	maxInFlight atomic.Int64
}

// UnavailableError says the provider cannot take the call now: it is rate
// limited ("rate_limited") or failing ("outage"). Wait is how long the gate
// expects that to last; Err is the provider's own error, if a call was made.
type UnavailableError struct {
	Reason string
	Wait   time.Duration
	Err    error
}

// Reasons an UnavailableError gives.
const (
	ReasonRateLimited = "rate_limited"
	ReasonOutage      = "outage"
)

func (e *UnavailableError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("llm unavailable (%s, %s): %v", e.Reason, errorClass(e.Err), e.Err)
	}
	return fmt.Sprintf("llm unavailable (%s): held back for %s", e.Reason, e.Wait.Round(time.Millisecond))
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// NewGate puts p behind a gate.
func NewGate(p Provider, cfg GateConfig) *Gate {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 256
	}
	if cfg.Failures == 0 {
		cfg.Failures = 3
	}
	if cfg.OpenFor <= 0 {
		cfg.OpenFor = 10 * time.Second
	}
	if cfg.RateLimitWait <= 0 {
		cfg.RateLimitWait = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Gate{p: p, cfg: cfg, slots: make(chan struct{}, cfg.Concurrency)}
	g.breaker = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "llm-" + p.Name(),
		MaxRequests: 1,
		Timeout:     cfg.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.Failures },
		IsExcluded:  func(err error) bool { return errors.Is(err, errNotTheProvider) },
	})
	return g
}

// errNotTheProvider marks a call whose outcome says nothing about the
// provider's health (a 429, or the turn itself stopped): the breaker
// neither counts it as a success nor as a failure.
var errNotTheProvider = errors.New("outcome not counted")

// Name implements Provider.
func (g *Gate) Name() string { return g.p.Name() }

// Reply implements Provider.
func (g *Gate) Reply(ctx context.Context, req Request) (Answer, error) {
	var ans Answer
	err := g.call(ctx, func(ctx context.Context) error {
		var err error
		ans, err = g.p.Reply(ctx, req)
		return err
	})
	return ans, err
}

// Classify implements Provider.
func (g *Gate) Classify(ctx context.Context, all []Agent, req Request) (string, string, Usage, error) {
	var name, reason string
	var usage Usage
	err := g.call(ctx, func(ctx context.Context) error {
		var err error
		name, reason, usage, err = g.p.Classify(ctx, all, req)
		return err
	})
	return name, reason, usage, err
}

// InFlight is how many calls are at the provider now.
func (g *Gate) InFlight() int64 { return g.inFlight.Load() }

// MaxInFlight is the most calls that were at the provider at once.
func (g *Gate) MaxInFlight() int64 { return g.maxInFlight.Load() }

// call runs f through the gate: a free slot, the shared back-off, and the
// classification of f's error.
func (g *Gate) call(ctx context.Context, f func(context.Context) error) error {
	select {
	case g.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-g.slots }()
	probe, wait := g.admit()
	if wait > 0 {
		return &UnavailableError{Reason: ReasonRateLimited, Wait: wait}
	}
	if probe {
		defer func() {
			g.mu.Lock()
			g.probing = false
			g.mu.Unlock()
		}()
	}

	var callErr error
	_, err := g.breaker.Execute(func() (struct{}, error) {
		n := g.inFlight.Add(1)
		for m := g.maxInFlight.Load(); n > m && !g.maxInFlight.CompareAndSwap(m, n); m = g.maxInFlight.Load() {
		}
		callErr = f(ctx)
		g.inFlight.Add(-1)
		if _, limited := rateLimited(callErr); !limited && ctx.Err() == nil {
			g.mu.Lock()
			g.limited = false
			g.mu.Unlock()
		}
		if callErr == nil {
			return struct{}{}, nil
		}
		if ctx.Err() != nil {
			// The turn was stopped (job timeout, shutdown), not the provider.
			return struct{}{}, errNotTheProvider
		}
		if wait, limited := rateLimited(callErr); limited {
			g.hold(cmp.Or(wait, g.cfg.RateLimitWait))
			return struct{}{}, errNotTheProvider
		}
		if providerDown(callErr) {
			return struct{}{}, callErr
		}
		// The provider answered (a 400, a reply we could not use): it is up.
		return struct{}{}, nil
	})
	switch {
	case errors.Is(err, gobreaker.ErrOpenState):
		return &UnavailableError{Reason: ReasonOutage, Wait: g.cfg.OpenFor}
	case errors.Is(err, gobreaker.ErrTooManyRequests):
		// Half-open: another call is probing the provider right now.
		return &UnavailableError{Reason: ReasonOutage, Wait: min(probeWait, g.cfg.OpenFor)}
	case callErr == nil:
		return nil
	}
	if _, limited := rateLimited(callErr); limited {
		return &UnavailableError{Reason: ReasonRateLimited, Wait: g.held(), Err: callErr}
	}
	if ctx.Err() == nil && providerDown(callErr) {
		return &UnavailableError{Reason: ReasonOutage, Wait: g.cfg.OpenFor, Err: callErr}
	}
	return callErr
}

// admit says whether a call may go to the provider after a 429: wait > 0
// while the hold lasts, or while another call probes whether the limit
// has lifted; probe when this call is that probe.
func (g *Gate) admit() (probe bool, wait time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if wait := g.heldUntil.Sub(g.cfg.Now()); wait > 0 {
		return false, wait
	}
	if !g.limited {
		return false, 0
	}
	if g.probing {
		return false, probeWait
	}
	g.probing = true
	return true, 0
}

// probeWait is how long a call waits while another probes a lifted limit.
const probeWait = time.Second

// held is how long calls must still wait out a 429 (0 = not held).
func (g *Gate) held() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(g.heldUntil.Sub(g.cfg.Now()), 0)
}

// hold makes every call wait d from now (a later hold wins).
func (g *Gate) hold(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.limited = true
	if until := g.cfg.Now().Add(d); until.After(g.heldUntil) {
		g.heldUntil = until
	}
}

// rateLimited reports whether err is the provider's 429 and the wait its
// Retry-After-Ms or Retry-After header asks for (0 when it gives none).
func rateLimited(err error) (time.Duration, bool) {
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests {
		return 0, false
	}
	if apiErr.Response == nil {
		return 0, true
	}
	return retryAfter(apiErr.Response.Header, time.Now()), true
}

// retryAfter reads Retry-After-Ms (OpenAI's) or Retry-After (seconds or an
// HTTP date), capped at 10 minutes.
func retryAfter(h http.Header, now time.Time) time.Duration {
	const most = 10 * time.Minute
	if v, err := strconv.ParseFloat(h.Get("Retry-After-Ms"), 64); err == nil && v > 0 {
		return min(time.Duration(v*float64(time.Millisecond)), most)
	}
	v := h.Get("Retry-After")
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
		return min(time.Duration(s*float64(time.Second)), most)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), most)
	}
	return 0
}

// providerDown reports whether err says the provider is failing rather
// than refusing this one request: a 5xx, a 408, a refused or broken
// connection, a timeout.
func providerDown(err error) bool {
	var apiErr *openai.Error
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode >= 500 || apiErr.StatusCode == http.StatusRequestTimeout
	}
	switch errorClass(err) {
	case "timeout", "network":
		return true
	}
	return false
}
