package agents_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/store"
)

// fakeOpenAI is an OpenAI-compatible chat-completions server: each request
// gets the next answer of the script (the last one repeats).
type fakeOpenAI struct {
	hits   atomic.Int32
	bodies chan map[string]any
	script []func(w http.ResponseWriter, r *http.Request)
}

func newFakeOpenAI(t *testing.T, script ...func(w http.ResponseWriter, r *http.Request)) (*fakeOpenAI, *agents.OpenAI) {
	return newFakeOpenAIWith(t, agents.OpenAIConfig{}, script...)
}

func newFakeOpenAIWith(t *testing.T, cfg agents.OpenAIConfig, script ...func(w http.ResponseWriter, r *http.Request)) (*fakeOpenAI, *agents.OpenAI) {
	t.Helper()
	f := &fakeOpenAI{bodies: make(chan map[string]any, 16), script: script}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer sk-test" {
			http.Error(w, `{"error":{"message":"not found","type":"invalid_request_error"}}`, http.StatusNotFound)
			return
		}
		var body map[string]any
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		select {
		case f.bodies <- body:
		default:
		}
		n := int(f.hits.Add(1)) - 1
		f.script[min(n, len(f.script)-1)](w, r)
	}))
	t.Cleanup(srv.Close)
	cfg.BaseURL, cfg.APIKey = srv.URL+"/v1", "sk-test"
	if cfg.Model == "" {
		cfg.Model = "fake-model"
	}
	p, err := agents.NewOpenAI(cfg)
	require.NoError(t, err)
	return f, p
}

func completion(message map[string]any, finish string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "fake-model",
			"choices": []any{map[string]any{"index": 0, "finish_reason": finish, "message": message}},
			"usage":   map[string]any{"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
		})
	}
}

func text(s string) func(w http.ResponseWriter, r *http.Request) {
	return completion(map[string]any{"role": "assistant", "content": s}, "stop")
}

func status(code int) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After-Ms", "5")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"error":{"message":"slow down","type":"rate_limit_error"}}`))
	}
}

var support = agents.Agent{Name: "assistant", SystemPrompt: "You help customers of Bakery Ltd.", Tools: []string{agents.ToolHandoff}}

func request() agents.Request {
	return agents.Request{
		Agent:   support,
		Summary: "customer: asked about cakes",
		History: []agents.Turn{{Author: store.AuthorContact, Text: "hi"}, {Author: store.AuthorBot, Text: "Hello!"}},
		Pending: []string{"do you deliver?", "to Leeds?"},
	}
}

func TestOpenAIReplyText(t *testing.T) {
	t.Parallel()
	f, p := newFakeOpenAI(t, text("Yes, we deliver to Leeds."))

	ans, err := p.Reply(context.Background(), request())
	require.NoError(t, err)
	require.Equal(t, "Yes, we deliver to Leeds.", ans.Text)
	require.False(t, ans.Handoff)
	require.Equal(t, "openai", ans.Usage.Provider)
	require.Equal(t, "fake-model", ans.Usage.Model)
	require.EqualValues(t, 42, ans.Usage.PromptTokens)
	require.EqualValues(t, 7, ans.Usage.CompletionTokens)
	require.Equal(t, 1, ans.Usage.Attempts)

	body := <-f.bodies
	require.Equal(t, "fake-model", body["model"])
	require.EqualValues(t, 300, body["max_tokens"], "the completion is bounded")
	msgs := body["messages"].([]any)
	require.Len(t, msgs, 4, "system, two history turns, the pending burst")
	require.Contains(t, msgs[0].(map[string]any)["content"], "Bakery Ltd.")
	require.Contains(t, msgs[0].(map[string]any)["content"], "asked about cakes")
	require.Equal(t, "do you deliver?\nto Leeds?", msgs[3].(map[string]any)["content"])
	tools := body["tools"].([]any)
	require.Equal(t, agents.ToolHandoff, tools[0].(map[string]any)["function"].(map[string]any)["name"])
}

func TestOpenAIToolCallHandsOff(t *testing.T) {
	t.Parallel()
	_, p := newFakeOpenAI(t, completion(map[string]any{
		"role": "assistant", "content": nil,
		"tool_calls": []any{map[string]any{"id": "call_1", "type": "function",
			"function": map[string]any{"name": agents.ToolHandoff, "arguments": `{"reason":"wants a refund"}`}}},
	}, "tool_calls"))

	ans, err := p.Reply(context.Background(), request())
	require.NoError(t, err)
	require.True(t, ans.Handoff)
	require.Equal(t, "wants a refund", ans.HandoffReason)
	require.Equal(t, agents.HandoffNotice, ans.Text)
}

func TestOpenAILeaves429ToTheGate(t *testing.T) {
	t.Parallel()
	f, p := newFakeOpenAI(t, status(http.StatusTooManyRequests), text("Here you go."))

	// The SDK does not retry a 429 on its own: the process's Gate makes
	// every turn wait out the provider's Retry-After instead.
	_, err := p.Reply(context.Background(), request())
	require.Error(t, err)
	require.Equal(t, "http 429", agents.ErrorClass(err))
	require.EqualValues(t, 1, f.hits.Load())
}

func TestOpenAIRetriesAreBounded(t *testing.T) {
	t.Parallel()
	f, p := newFakeOpenAIWith(t, agents.OpenAIConfig{MaxRetries: 2}, status(http.StatusServiceUnavailable))

	_, err := p.Reply(context.Background(), request())
	require.Error(t, err)
	require.Equal(t, "http 503", agents.ErrorClass(err))
	require.EqualValues(t, 3, f.hits.Load(), "one attempt and two retries")
}

func TestOpenAITimeout(t *testing.T) {
	t.Parallel()
	hang := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}
	_, p := newFakeOpenAIWith(t, agents.OpenAIConfig{Timeout: 300 * time.Millisecond, AttemptTimeout: 200 * time.Millisecond, MaxRetries: -1}, hang)

	_, err := p.Reply(context.Background(), request())
	require.Error(t, err)
	require.Equal(t, "timeout", agents.ErrorClass(err))
}

func TestOpenAIClassifiesForTheRoutingAgent(t *testing.T) {
	t.Parallel()
	all := []agents.Agent{
		{Name: "assistant", IsDefault: true},
		{Name: "billing", SystemPrompt: "Invoices and refunds.", Keywords: []string{"invoice"}},
	}
	req := agents.Request{Pending: []string{"I was charged twice"}}

	_, p := newFakeOpenAI(t, text(`{"agent": "billing", "reason": "a payment problem"}`))
	a, route := agents.Choose(context.Background(), p, all, req)
	require.Equal(t, "billing", a.Name)
	require.Equal(t, "llm", route.By)
	require.Equal(t, "a payment problem", route.Reason)
	require.NotNil(t, route.Usage)

	require.Equal(t, agents.ClassifierCalled, route.Classifier)

	// A failing classifier leaves the decision to the tenant's default agent.
	broken, brokenP := newFakeOpenAIWith(t, agents.OpenAIConfig{MaxRetries: -1}, status(http.StatusInternalServerError))
	a, route = agents.Choose(context.Background(), brokenP, all, agents.Request{Pending: []string{"I was charged twice"}})
	require.Equal(t, "assistant", a.Name)
	require.Equal(t, "default", route.By)
	require.Contains(t, route.Reason, "classification failed (http 500)")
	require.EqualValues(t, 1, broken.hits.Load())

	// Keyword rules, or the agent already answering the conversation,
	// decide without a classifier call.
	a, route = agents.Choose(context.Background(), brokenP, all, agents.Request{Pending: []string{"where is my invoice"}})
	require.Equal(t, "billing", a.Name)
	require.Equal(t, "keywords", route.By)
	require.Equal(t, agents.ClassifierSkipped, route.Classifier)
	a, route = agents.Choose(context.Background(), brokenP, all, agents.Request{Pending: []string{"thanks, and one more thing"}, CurrentAgent: "billing"})
	require.Equal(t, "billing", a.Name)
	require.Equal(t, "current", route.By)
	require.Equal(t, agents.ClassifierSkipped, route.Classifier)
	a, route = agents.Choose(context.Background(), brokenP, all, agents.Request{Pending: []string{"another invoice question"}, CurrentAgent: "assistant"})
	require.Equal(t, "billing", a.Name, "a keyword pointing elsewhere beats the current agent")
	require.Equal(t, "keywords", route.By)
	require.EqualValues(t, 1, broken.hits.Load(), "no classifier call when the rules decide")
}
