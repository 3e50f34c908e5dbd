// Package fakellm is a fake OpenAI-compatible chat-completions server
// (POST /v1/chat/completions) that behaves like a real model behind a real
// provider: it takes time to answer (latency with jitter), rate-limits with
// 429 and Retry-After, fails with 5xx, hangs until the client gives up, and
// answers with tool calls. Errors have OpenAI's body shape. It counts every
// call and the most calls it held at once, so tests and the benchmarks can
// check what the provider saw.
//
// A completion answers the last user message ("Fake answer to: ...", and
// what the tools it called said: "(book said {...})"); a
// routing classification (the system prompt of agents.OpenAI.Classify) names
// the first agent listed, or the one Options.Route picks.
package fakellm

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FaultKind is what an injected fault does to a call.
type FaultKind int

const (
	// FaultRateLimit answers 429 (rate_limit_error) with Retry-After.
	FaultRateLimit FaultKind = iota + 1
	// FaultServerError answers 500 (server_error).
	FaultServerError
	// FaultUnavailable answers 503, as a provider under maintenance does.
	FaultUnavailable
	// FaultHang holds the call until the client gives up (or Close).
	FaultHang
)

// Fault is an injected fault for the next Times calls (every call until
// Clear when Times is 0).
type Fault struct {
	Kind  FaultKind
	Times int
	// RetryAfter is sent with FaultRateLimit, in whole seconds when it is a
	// whole number of seconds, else as Retry-After-Ms.
	RetryAfter time.Duration
}

// ToolCall is one function call the fake answers with.
type ToolCall struct {
	Name      string
	Arguments string // JSON
}

// Options configure a Server.
type Options struct {
	// Latency is how long each call takes before it answers (errors too).
	Latency time.Duration
	// Jitter adds a uniformly random 0..Jitter to Latency.
	Jitter time.Duration
	// Model is reported in answers when the request names none.
	Model string
	// Route, when set, picks the agent a routing classification names from
	// the names listed (default: the first).
	Route func(agents []string, message string) string
}

// Server is a running fake.
type Server struct {
	opts   Options
	srv    *http.Server
	url    string
	closed chan struct{}

	mu      sync.Mutex
	latency time.Duration
	jitter  time.Duration
	faults  []Fault
	tools   map[string]toolRule // trigger word in the user message -> calls

	// Transcriber answers /v1/audio/transcriptions (voice notes).
	Transcriber *Transcriber

	calls       atomic.Int64
	answered    atomic.Int64
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
}

// Start serves a fake on 127.0.0.1 on a free port.
func Start(opts Options) (*Server, error) {
	if opts.Model == "" {
		opts.Model = "fake-model"
	}
	s := &Server{opts: opts, closed: make(chan struct{}), latency: opts.Latency, jitter: opts.Jitter, tools: map[string]toolRule{},
		Transcriber: NewTranscriber(opts.Latency)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake llm: listen: %w", err)
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	s.url = "http://" + ln.Addr().String() + "/v1"
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the base URL to use as OPENAI_BASE_URL (it ends in /v1).
func (s *Server) URL() string { return s.url }

// Close stops the server; hanging calls are released.
func (s *Server) Close() {
	select {
	case <-s.closed:
		return
	default:
		close(s.closed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	_ = s.srv.Close()
}

// SetLatency changes how long calls take from now on.
func (s *Server) SetLatency(latency, jitter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency, s.jitter = latency, jitter
}

// Inject queues a fault; faults apply in the order injected.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// Clear removes every pending fault: the provider is healthy again.
func (s *Server) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// toolRule is what ToolRoundsOn set for a trigger word.
type toolRule struct {
	rounds int
	calls  []ToolCall
}

// ToolCallsOn makes a completion whose last user message contains word
// (case-insensitive) answer with calls instead of text, once: a request
// that already holds their results gets a text answer quoting them, as a
// model that used the results would give.
func (s *Server) ToolCallsOn(word string, calls ...ToolCall) {
	s.ToolRoundsOn(word, 1, calls...)
}

// ToolRoundsOn is ToolCallsOn for rounds rounds: the model calls the tools
// again after each result until it has done so rounds times. Like a real
// model it calls only tools the request offers, and none when the request's
// tool_choice is "none".
func (s *Server) ToolRoundsOn(word string, rounds int, calls ...ToolCall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tools[strings.ToLower(word)] = toolRule{rounds: rounds, calls: calls}
}

// Calls is how many chat completions were requested (answered or not).
func (s *Server) Calls() int64 { return s.calls.Load() }

// Answered is how many calls got a 200 answer.
func (s *Server) Answered() int64 { return s.answered.Load() }

// InFlight is how many calls the fake holds now.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// MaxInFlight is the most calls the fake held at once.
func (s *Server) MaxInFlight() int64 { return s.maxInFlight.Load() }

type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role       string          `json:"role"`
		Content    json.RawMessage `json:"content"`
		ToolCallID string          `json:"tool_call_id"`
		ToolCalls  []struct {
			ID       string `json:"id"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		} `json:"tool_calls"`
	} `json:"messages"`
	Tools []struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	} `json:"tools"`
	ToolChoice json.RawMessage `json:"tool_choice"`
}

// offers reports whether the request lets the model call the tool name.
func (r chatRequest) offers(name string) bool {
	if string(r.ToolChoice) == `"none"` {
		return false
	}
	for _, t := range r.Tools {
		if t.Function.Name == name {
			return true
		}
	}
	return false
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.TrimSuffix(r.URL.Path, "/") == TranscriptionsPath {
		s.Transcriber.ServeHTTP(w, r)
		return
	}
	if r.Method != http.MethodPost || strings.TrimSuffix(r.URL.Path, "/") != "/v1/chat/completions" {
		writeError(w, http.StatusNotFound, "invalid_request_error", "unknown endpoint")
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "You didn't provide an API key.")
		return
	}
	var req chatRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "We could not parse the JSON body of your request.")
		return
	}
	if req.Model == "" || len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "model and messages are required")
		return
	}

	s.calls.Add(1)
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for m := s.maxInFlight.Load(); n > m && !s.maxInFlight.CompareAndSwap(m, n); m = s.maxInFlight.Load() {
	}

	fault, delay := s.next()
	if fault != nil && fault.Kind == FaultHang {
		select {
		case <-r.Context().Done():
		case <-s.closed:
		}
		return
	}
	if fault != nil && fault.Kind == FaultRateLimit {
		delay = 0 // a rate limiter answers at once
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-s.closed:
			return
		}
	}
	if fault != nil {
		switch fault.Kind {
		case FaultRateLimit:
			if d := fault.RetryAfter; d > 0 {
				if d%time.Second == 0 {
					w.Header().Set("Retry-After", strconv.Itoa(int(d/time.Second)))
				} else {
					w.Header().Set("Retry-After-Ms", strconv.FormatInt(d.Milliseconds(), 10))
				}
			}
			writeError(w, http.StatusTooManyRequests, "rate_limit_error", "Rate limit reached for requests per minute.")
		case FaultUnavailable:
			writeError(w, http.StatusServiceUnavailable, "server_error", "The server is overloaded or not ready yet.")
		default:
			writeError(w, http.StatusInternalServerError, "server_error", "The server had an error while processing your request.")
		}
		return
	}
	s.answer(w, req)
	s.answered.Add(1)
}

// next takes the fault for this call, if any, and the call's latency.
func (s *Server) next() (*Fault, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.latency
	if s.jitter > 0 {
		d += rand.N(s.jitter)
	}
	if len(s.faults) == 0 {
		return nil, d
	}
	f := s.faults[0]
	if f.Times > 0 {
		if s.faults[0].Times--; s.faults[0].Times == 0 {
			s.faults = s.faults[1:]
		}
	}
	return &f, d
}

func (s *Server) answer(w http.ResponseWriter, req chatRequest) {
	system, last := "", ""
	// Since the last user message: the rounds of tool calls and the results.
	rounds, names := 0, map[string]string{}
	var results []string
	for _, m := range req.Messages {
		text := contentText(m.Content)
		switch m.Role {
		case "system":
			if system == "" {
				system = text
			}
		case "user":
			last, rounds, results = text, 0, nil
		case "assistant":
			if len(m.ToolCalls) > 0 {
				rounds++
			}
			for _, c := range m.ToolCalls {
				names[c.ID] = c.Function.Name
			}
		case "tool":
			results = append(results, names[m.ToolCallID]+" said "+text)
		}
	}
	msg := map[string]any{"role": "assistant"}
	finish := "stop"
	rule, ok := s.toolRule(last)
	var calls []any
	if ok && rounds < rule.rounds {
		for _, c := range rule.calls {
			if req.offers(c.Name) {
				calls = append(calls, map[string]any{"id": fmt.Sprintf("call_%d_%d_%d", rounds+1, len(calls)+1, rand.N(1_000_000)),
					"type": "function", "function": map[string]any{"name": c.Name, "arguments": c.Arguments}})
			}
		}
	}
	switch {
	case strings.HasPrefix(system, "You route customer messages"):
		msg["content"] = fmt.Sprintf(`{"agent": %q, "reason": "fake classifier"}`, s.route(system, last))
	case len(calls) > 0:
		msg["content"], msg["tool_calls"], finish = nil, calls, "tool_calls"
	default:
		if r := []rune(last); len(r) > 200 {
			last = string(r[:200])
		}
		answer := "Fake answer to: " + last
		if len(results) > 0 {
			answer += " (" + strings.Join(results, "; ") + ")"
		}
		msg["content"] = answer
	}
	prompt := 0
	for _, m := range req.Messages {
		prompt += len(m.Content) / 4
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id": "chatcmpl-fake", "object": "chat.completion", "created": time.Now().Unix(), "model": req.Model,
		"choices": []any{map[string]any{"index": 0, "finish_reason": finish, "message": msg}},
		"usage":   map[string]any{"prompt_tokens": prompt, "completion_tokens": 12, "total_tokens": prompt + 12},
	})
}

func (s *Server) toolRule(message string) (toolRule, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lower := strings.ToLower(message)
	for word, rule := range s.tools {
		if strings.Contains(lower, word) {
			return rule, true
		}
	}
	return toolRule{}, false
}

// route names the agent a classification picks from the "- name: ..."
// lines of the classifier's prompt.
func (s *Server) route(system, message string) string {
	var names []string
	for _, line := range strings.Split(system, "\n") {
		if rest, ok := strings.CutPrefix(line, "- "); ok {
			if name, _, ok := strings.Cut(rest, ":"); ok {
				names = append(names, name)
			}
		}
	}
	if s.opts.Route != nil {
		return s.opts.Route(names, message)
	}
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// contentText is a message's content as text: a string, or the text parts
// of a content array.
func contentText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	_ = json.Unmarshal(raw, &parts)
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}})
}
