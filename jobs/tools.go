package jobs

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/egress"
	"github.com/conversa/conversa/internal/signing"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// HTTP tools: the turn's loop of agent calls and tool rounds, and the calls
// themselves. The rule (docs/tools.md): each call is recorded, committed,
// before its endpoint is POSTed, and its result is recorded before the
// turn goes on, keyed by (turn, round, index). A retried turn replays what
// is recorded instead of asking the model again, so a recorded call is
// never made twice; only a call with no recorded result (a crash between
// the POST and its record) is made again, with the same body and the same
// Idempotency-Key.

// Limits of one tool call.
const (
	// ToolTimeout bounds one POST to a tool endpoint.
	ToolTimeout = 10 * time.Second
	// ToolMaxAnswer is the largest answer a tool may give (16 KiB).
	ToolMaxAnswer = 16 << 10
)

// toolRoundError is a failure to run a round of tool calls (recording it),
// not the LLM's: the turn is retried without blaming the provider.
type toolRoundError struct{ err error }

func (e toolRoundError) Error() string { return "tool round: " + e.err.Error() }
func (e toolRoundError) Unwrap() error { return e.err }

// toolIdempotencyKey is the Idempotency-Key of a turn's call: the same for
// every POST of that call, whichever attempt of the turn makes it.
func toolIdempotencyKey(messageID int64, round, idx int) string {
	return fmt.Sprintf("conversa-%d-%d-%d", messageID, round, idx)
}

// answer asks the agent for the turn's reply, running the HTTP tool rounds
// it asks for in between (at most agents.MaxToolRounds). It first picks up
// the rounds an earlier attempt of this turn recorded. The answer's usage
// adds up every agent call; events are the trace events that commit with
// the reply (the calls reused from a record).
func (w *ReplyWorker) answer(ctx context.Context, log *slog.Logger, job *river.Job[jobargs.ReplyArgs], req agents.Request) (agents.Answer, []store.Event, error) {
	a := job.Args
	// An earlier attempt's calls, made again from their records. An agent
	// without HTTP tools makes none, so it has none to read.
	var recorded []store.ToolCall
	if len(req.Agent.HTTPTools) > 0 {
		var err error
		if recorded, err = store.TurnToolCalls(ctx, w.db, a.TenantID, a.MessageID); err != nil {
			return agents.Answer{}, nil, toolRoundError{err}
		}
	}
	var events []store.Event
	for start := 0; start < len(recorded); {
		end := start
		for end < len(recorded) && recorded[end].Round == recorded[start].Round {
			end++
		}
		round, reused, err := w.makeCalls(ctx, log, job, req.Agent, recorded[start:end])
		if err != nil {
			return agents.Answer{}, nil, toolRoundError{err}
		}
		events = append(events, reused...)
		req.ToolRounds = append(req.ToolRounds, round)
		start = end
	}
	var total agents.Usage
	for {
		ans, err := w.provider.Reply(ctx, req)
		if ans.Usage.Provider != "" {
			w.metrics.LLM(ans.Usage.Provider, ans.Usage.Model, ans.Usage.Latency, ans.Usage.PromptTokens, ans.Usage.CompletionTokens)
		}
		total = addUsage(total, ans.Usage)
		ans.Usage = total
		if err != nil || len(ans.ToolCalls) == 0 {
			return ans, events, err
		}
		n := len(req.ToolRounds) + 1
		calls := make([]store.ToolCall, len(ans.ToolCalls))
		for i, c := range ans.ToolCalls {
			calls[i] = store.ToolCall{Round: n, Index: i, CallID: c.ID, Name: c.Name, Arguments: c.Arguments,
				IdempotencyKey: toolIdempotencyKey(a.MessageID, n, i)}
		}
		calls, err = store.RecordToolRound(ctx, w.db, a.TenantID, a.MessageID, calls)
		if err != nil {
			return ans, events, toolRoundError{err}
		}
		round, reused, err := w.makeCalls(ctx, log, job, req.Agent, calls)
		if err != nil {
			return ans, events, toolRoundError{err}
		}
		events = append(events, reused...)
		req.ToolRounds = append(req.ToolRounds, round)
	}
}

// addUsage adds one agent call's usage to a turn's.
func addUsage(total, u agents.Usage) agents.Usage {
	if u.Provider == "" {
		return total
	}
	u.PromptTokens += total.PromptTokens
	u.CompletionTokens += total.CompletionTokens
	u.Latency += total.Latency
	u.LatencyMS = u.Latency.Milliseconds()
	u.Attempts += total.Attempts
	return u
}

// makeCalls makes a recorded round's calls (at once, as a model that asks
// for several means them to be) and returns the round with its results.
// A call whose result is recorded is not made: reused holds its trace
// event, to commit with the reply.
func (w *ReplyWorker) makeCalls(ctx context.Context, log *slog.Logger, job *river.Job[jobargs.ReplyArgs], agent agents.Agent, calls []store.ToolCall) (agents.ToolRound, []store.Event, error) {
	round := agents.ToolRound{Calls: make([]agents.ToolCall, len(calls)), Results: make([]agents.ToolResult, len(calls))}
	var reused []store.Event
	var secrets []string
	for i, c := range calls {
		round.Calls[i] = agents.ToolCall{ID: c.CallID, Name: c.Name, Arguments: c.Arguments}
		if c.Done() {
			round.Results[i] = agents.ToolResult{Text: *c.Result, Failed: *c.Outcome != store.ToolOK}
			reused = append(reused, store.Event{Kind: "turn.tool", Detail: map[string]any{
				"tool": c.Name, "round": c.Round, "call": c.Index, "outcome": *c.Outcome, "status": c.HTTPStatus,
				"reused": true, "turn_attempt": job.Attempt}})
		} else if secrets == nil {
			var err error
			if secrets, err = w.signingSecrets(ctx, job.Args.TenantID); err != nil {
				return round, nil, err
			}
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(calls))
	for i, c := range calls {
		if c.Done() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			round.Results[i], errs[i] = w.makeCall(ctx, log, job, agent, c, secrets)
		}()
	}
	wg.Wait()
	return round, reused, errors.Join(errs...)
}

// makeCall makes one recorded call and records its result with its
// turn.tool trace event. The attempt is counted before the POST.
func (w *ReplyWorker) makeCall(ctx context.Context, log *slog.Logger, job *river.Job[jobargs.ReplyArgs], agent agents.Agent, c store.ToolCall, secrets []string) (agents.ToolResult, error) {
	a := job.Args
	var tool *store.HTTPTool
	for i := range agent.HTTPTools {
		if agent.HTTPTools[i].Name == c.Name {
			tool = &agent.HTTPTools[i]
		}
	}
	res := toolAnswer{outcome: store.ToolUnknownTool, reason: "the agent has no tool named " + c.Name}
	attempt := 0
	var args map[string]any
	switch {
	case tool == nil:
	case json.Unmarshal([]byte(c.Arguments), &args) != nil:
		res = toolAnswer{outcome: store.ToolBadArgs, reason: "the arguments were not a JSON object"}
	default:
		var err error
		if attempt, err = store.StartToolAttempt(ctx, w.db, a.MessageID, c.Round, c.Index); err != nil {
			return agents.ToolResult{}, err
		}
		res = w.tools.post(ctx, tool.URL, c.IdempotencyKey, []byte(c.Arguments), secrets)
		if w.afterToolCall != nil {
			if err := w.afterToolCall(ctx, c); err != nil {
				return agents.ToolResult{}, err
			}
		}
	}
	result := agents.ToolResult{Text: res.text}
	if res.outcome != store.ToolOK {
		result = agents.FailedToolResult(res.reason)
	}
	detail := map[string]any{"tool": c.Name, "round": c.Round, "call": c.Index, "outcome": res.outcome,
		"latency_ms": res.latency.Milliseconds(), "attempt": attempt, "turn_attempt": job.Attempt}
	if res.status != 0 {
		detail["status"] = res.status
	}
	if res.outcome != store.ToolOK {
		detail["reason"] = res.reason
	}
	// The result is recorded even when the turn was stopped meanwhile: the
	// endpoint has acted, and a retry must not call it again.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := store.RecordToolResult(rctx, w.db, a.TenantID, a.MessageID, store.ToolResult{
		Round: c.Round, Index: c.Index, Outcome: res.outcome, HTTPStatus: res.status, Result: result.Text,
		LatencyMS: int(res.latency.Milliseconds()),
	}, store.Event{Kind: "turn.tool", Detail: detail})
	if err != nil {
		return result, err
	}
	w.metrics.ToolCall(string(res.outcome), res.latency)
	log.Info("tool called", "tool", c.Name, "round", c.Round, "outcome", res.outcome, "status", res.status,
		"latency_ms", res.latency.Milliseconds(), "attempt", attempt)
	return result, nil
}

// toolAnswer is what one POST to a tool endpoint came to.
type toolAnswer struct {
	outcome store.ToolOutcome
	status  int
	// text is the answer given to the model (outcome ok); reason says why
	// the call failed, in words the model and the trace may show (never
	// the endpoint's body).
	text, reason string
	latency      time.Duration
}

// ToolHTTP POSTs tool calls: the signature, the Idempotency-Key and the
// limits (docs/tools.md).
type ToolHTTP struct {
	// Client makes the POSTs; it must not follow redirects and should refuse
	// private addresses (see NewToolHTTP).
	Client *http.Client
	// Check refuses a URL Conversa may not call (nil: any http(s) URL).
	Check func(url string) error
	// Sign is the X-Conversa-Signature value for a body.
	Sign func(secrets []string, body []byte) string
	// Timeout bounds one call (0 = ToolTimeout).
	Timeout time.Duration
}

// post makes one POST of a tool call.
func (t ToolHTTP) post(ctx context.Context, url, key string, body []byte, secrets []string) toolAnswer {
	start := time.Now()
	if t.Check != nil {
		if err := t.Check(url); err != nil {
			return toolAnswer{outcome: store.ToolRefused, reason: "the tool's URL may not be called"}
		}
	}
	timeout := cmp.Or(t.Timeout, ToolTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return toolAnswer{outcome: store.ToolRefused, reason: "the tool's URL is not valid"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/plain")
	req.Header.Set("User-Agent", "Conversa")
	req.Header.Set("Idempotency-Key", key)
	if t.Sign != nil && len(secrets) > 0 {
		req.Header.Set("X-Conversa-Signature", t.Sign(secrets, body))
	}
	client := t.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		var netErr net.Error
		out := toolAnswer{outcome: store.ToolNetwork, reason: "could not reach the tool", latency: time.Since(start)}
		switch {
		case errors.Is(err, egress.ErrRefused):
			out.outcome, out.reason = store.ToolRefused, "the tool's address may not be called"
		case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
			out.outcome, out.reason = store.ToolTimeout, fmt.Sprintf("no answer within %s", timeout)
		}
		return out
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, ToolMaxAnswer+1))
	out := toolAnswer{status: resp.StatusCode, latency: time.Since(start)}
	ctype, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case err != nil:
		out.outcome, out.reason = store.ToolNetwork, "the answer was cut off"
		if errors.Is(err, context.DeadlineExceeded) {
			out.outcome, out.reason = store.ToolTimeout, fmt.Sprintf("no whole answer within %s", timeout)
		}
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		out.outcome, out.reason = store.ToolHTTPError, fmt.Sprintf("the tool answered HTTP %d", resp.StatusCode)
	case len(raw) > ToolMaxAnswer:
		out.outcome, out.reason = store.ToolBadAnswer, "the answer is over 16 KiB"
	case len(bytes.TrimSpace(raw)) == 0:
		out.outcome, out.text = store.ToolOK, "{}"
	case ctype == "application/json" || strings.HasSuffix(ctype, "+json"):
		if !json.Valid(raw) {
			out.outcome, out.reason = store.ToolBadAnswer, "the answer is not valid JSON"
		} else {
			out.outcome, out.text = store.ToolOK, string(raw)
		}
	case strings.HasPrefix(ctype, "text/") && ctype != "text/html":
		out.outcome, out.text = store.ToolOK, strings.ToValidUTF8(string(raw), "")
	default:
		out.outcome, out.reason = store.ToolBadAnswer, "the answer is neither JSON nor text"
	}
	return out
}

// NewToolHTTP is the tool caller of a process: the egress client (never
// follows redirects; private and loopback addresses refused after DNS unless
// allowPrivate, TOOLS_ALLOW_PRIVATE), the same rule on the URL first, and
// the tenant's signature.
func NewToolHTTP(allowPrivate bool) ToolHTTP {
	return ToolHTTP{
		Client: egress.NewClient(egress.Options{AllowPrivate: allowPrivate, Timeout: ToolTimeout}),
		Check:  func(url string) error { return egress.CheckURL(url, allowPrivate) },
		Sign:   signing.Header,
	}
}

// signingSecrets are the tenant's valid signing secrets, newest first.
func (w *ReplyWorker) signingSecrets(ctx context.Context, tenantID string) ([]string, error) {
	return store.SigningSecrets(ctx, w.db, w.sealer, tenantID)
}
