package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/conversa/conversa/store"
)

// OpenAIConfig configures the openai provider.
type OpenAIConfig struct {
	// BaseURL of any OpenAI-compatible server (OpenAI, Azure, Ollama, vLLM);
	// empty means OpenAI's own.
	BaseURL string
	APIKey  string
	// Model is the default model; an agent's own Model overrides it.
	Model string
	// Timeout bounds one Reply, the SDK's retries included (LLM_TIMEOUT).
	// The turn job's timeout follows from it (jobs.TurnTimeout). Default 60 s.
	Timeout time.Duration
	// AttemptTimeout bounds one HTTP attempt. Default Timeout: a reasoning
	// model that takes most of it still answers.
	AttemptTimeout time.Duration
	// MaxRetries on 5xx and connection errors (the SDK backs off). 0 means
	// the default, 2; negative means none. A 429 is never retried here:
	// the process's Gate makes every turn wait out its Retry-After at once.
	MaxRetries int
	// MaxTokens bounds the completion. Default 300.
	MaxTokens int64
	// HTTPClient is optional (tests).
	HTTPClient *http.Client
}

// OpenAI answers through an OpenAI-compatible chat-completions API.
type OpenAI struct {
	client  openai.Client
	model   string
	timeout time.Duration
	max     int64
}

// NewOpenAI builds the openai provider. It reads no environment variables:
// cmd passes OPENAI_BASE_URL, OPENAI_API_KEY and LLM_MODEL in cfg.
func NewOpenAI(cfg OpenAIConfig) (*OpenAI, error) {
	if cfg.Model == "" {
		return nil, errors.New("openai provider: model is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = cfg.Timeout
	}
	if cfg.MaxRetries < 0 {
		cfg.MaxRetries = 0
	} else if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 2
	}
	if cfg.MaxTokens <= 0 {
		cfg.MaxTokens = 300
	}
	opts := []option.RequestOption{
		option.WithAPIKey(cfg.APIKey),
		option.WithMaxRetries(cfg.MaxRetries),
		option.WithRequestTimeout(cfg.AttemptTimeout),
		option.WithMaxRetryDelay(2 * time.Second),
		option.WithMiddleware(noRetryOn429),
	}
	if cfg.BaseURL != "" {
		opts = append(opts, option.WithBaseURL(strings.TrimRight(cfg.BaseURL, "/")+"/"))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, option.WithHTTPClient(cfg.HTTPClient))
	}
	return &OpenAI{client: openai.NewClient(opts...), model: cfg.Model, timeout: cfg.Timeout, max: cfg.MaxTokens}, nil
}

// Name implements Provider.
func (*OpenAI) Name() string { return "openai" }

// ClassifyTimeout bounds the routing classifier's call: past it the turn
// goes on with the default agent rather than spend its LLM_TIMEOUT there.
const ClassifyTimeout = 10 * time.Second

// noRetryOn429 tells the SDK not to retry a 429 itself (it honours the
// x-should-retry header): one turn's retries would hammer a provider that
// asked every caller to wait. The Gate holds every turn instead.
func noRetryOn429(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	res, err := next(r)
	if res != nil && res.StatusCode == http.StatusTooManyRequests {
		res.Header.Set("x-should-retry", "false")
	}
	return res, err
}

var handoffTool = openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
	Name:        ToolHandoff,
	Description: openai.String("Hand the conversation to a person from the business. Call it when the customer asks for a person or when you cannot help."),
	Parameters: shared.FunctionParameters{
		"type": "object",
		"properties": map[string]any{
			"reason": map[string]any{"type": "string", "description": "Why a person should take over, in a few words."},
		},
	},
})

// Reply implements Provider.
func (p *OpenAI) Reply(ctx context.Context, req Request) (Answer, error) {
	model := p.model
	if req.Agent.Model != "" {
		model = req.Agent.Model
	}
	system := req.Agent.SystemPrompt
	if system == "" {
		system = DefaultAgent().SystemPrompt
	}
	if req.Summary != "" {
		system += "\n\nSummary of the earlier conversation:\n" + req.Summary
	}
	system += knowledgePrompt(req.Knowledge)
	msgs := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(system)}
	for _, t := range req.History {
		switch t.Author {
		case store.AuthorContact:
			text := t.Text
			if t.DuringHandoff {
				text = "[written to a person from the team, not to you] " + text
			}
			msgs = append(msgs, openai.UserMessage(text))
		case store.AuthorHuman:
			msgs = append(msgs, openai.AssistantMessage("[a person from the team wrote] "+t.Text))
		default:
			msgs = append(msgs, openai.AssistantMessage(t.Text))
		}
	}
	msgs = append(msgs, pendingMessage(req))
	msgs = append(msgs, toolRoundMessages(req.ToolRounds)...)
	params := openai.ChatCompletionNewParams{
		Model:     shared.ChatModel(model),
		Messages:  msgs,
		MaxTokens: openai.Int(p.max),
	}
	if CanHandoff(req.Agent) {
		params.Tools = []openai.ChatCompletionToolUnionParam{handoffTool}
	}
	if len(req.Agent.HTTPTools) > 0 {
		params.Tools = append(params.Tools, httpToolParams(req.Agent.HTTPTools)...)
		if !OffersTools(req) {
			// The turn's rounds are spent: the model must answer now. The
			// tools stay listed, as the replayed calls name them.
			params.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String(string(openai.ChatCompletionToolChoiceOptionAutoNone))}
		}
	}
	resp, usage, err := p.complete(ctx, params)
	if err != nil {
		return Answer{Usage: usage}, err
	}
	ans := Answer{Usage: usage}
	if len(resp.Choices) == 0 {
		return ans, errors.New("openai: response has no choices")
	}
	msg := resp.Choices[0].Message
	for _, tc := range msg.ToolCalls {
		if tc.Function.Name != ToolHandoff && OffersTools(req) {
			ans.ToolCalls = append(ans.ToolCalls, ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
		if tc.Function.Name == ToolHandoff && CanHandoff(req.Agent) {
			ans.Handoff = true
			var a struct {
				Reason string `json:"reason"`
			}
			_ = json.Unmarshal([]byte(tc.Function.Arguments), &a)
			ans.HandoffReason = CleanReply(a.Reason)
			if ans.HandoffReason == "" {
				ans.HandoffReason = "agent called " + ToolHandoff
			}
		}
	}
	if ans.Handoff {
		ans.ToolCalls = nil // a person takes over: nothing more to look up
	}
	if len(ans.ToolCalls) > 0 {
		return ans, nil
	}
	ans.Text = CleanReply(msg.Content)
	if ans.Handoff && ans.Text == "" {
		ans.Text = HandoffNotice
	}
	if ans.Text == "" {
		return ans, errors.New("openai: empty reply")
	}
	return ans, nil
}

// Classify implements Provider: one short completion that names an agent.
func (p *OpenAI) Classify(ctx context.Context, all []Agent, req Request) (string, string, Usage, error) {
	var b strings.Builder
	b.WriteString("You route customer messages to one of these agents. Answer with JSON only: {\"agent\": \"<name>\", \"reason\": \"<a few words>\"}.\nAgents:\n")
	for _, a := range all {
		desc := strings.Join(strings.Fields(a.SystemPrompt), " ")
		if r := []rune(desc); len(r) > 200 {
			desc = string(r[:200])
		}
		fmt.Fprintf(&b, "- %s: %s", a.Name, desc)
		if len(a.Keywords) > 0 {
			fmt.Fprintf(&b, " (topics: %s)", strings.Join(a.Keywords, ", "))
		}
		b.WriteByte('\n')
	}
	params := openai.ChatCompletionNewParams{
		Model: shared.ChatModel(p.model),
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage(b.String()),
			openai.UserMessage(strings.Join(req.Pending, "\n")),
		},
		MaxTokens: openai.Int(60),
	}
	ctx, cancel := context.WithTimeout(ctx, min(p.timeout, ClassifyTimeout))
	defer cancel()
	resp, usage, err := p.complete(ctx, params)
	if err != nil {
		return "", "", usage, err
	}
	if len(resp.Choices) == 0 {
		return "", "", usage, nil
	}
	content := resp.Choices[0].Message.Content
	var out struct {
		Agent  string `json:"agent"`
		Reason string `json:"reason"`
	}
	if i, j := strings.IndexByte(content, '{'), strings.LastIndexByte(content, '}'); i >= 0 && j > i {
		_ = json.Unmarshal([]byte(content[i:j+1]), &out)
	}
	if out.Agent == "" {
		// A model that ignored the format may still have named an agent.
		norm := normalize(content)
		for _, a := range all {
			if hasWord(norm, a.Name) {
				out.Agent = a.Name
				break
			}
		}
	}
	reason := CleanReply(out.Reason)
	if r := []rune(reason); len(r) > 200 {
		reason = string(r[:200])
	}
	if reason == "" {
		reason = "chosen by the classifier"
	}
	return out.Agent, reason, usage, nil
}

// complete runs one chat completion under the provider's timeout and
// returns its usage (provider, model, tokens, latency) even on failure.
func (p *OpenAI) complete(ctx context.Context, params openai.ChatCompletionNewParams) (*openai.ChatCompletion, Usage, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	start := time.Now()
	var attempts int
	resp, err := p.client.Chat.Completions.New(ctx, params, option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		attempts++
		return next(r)
	}))
	lat := time.Since(start)
	u := Usage{Provider: "openai", Model: string(params.Model), Latency: lat, LatencyMS: lat.Milliseconds(), Attempts: attempts}
	if err != nil {
		return nil, u, fmt.Errorf("openai chat completion (%d attempts): %w", attempts, err)
	}
	if resp.Model != "" {
		u.Model = resp.Model
	}
	u.PromptTokens, u.CompletionTokens = resp.Usage.PromptTokens, resp.Usage.CompletionTokens
	return resp, u, nil
}

// errorClass names an error for a trace without quoting the provider's text
// (which may echo the customer's message).
func errorClass(err error) string {
	var apiErr *openai.Error
	var netErr net.Error
	switch {
	case errors.As(err, &apiErr):
		return fmt.Sprintf("http %d", apiErr.StatusCode)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.As(err, &netErr):
		return "network"
	default:
		return "error"
	}
}

// ErrorClass is errorClass for callers that record a failed provider call.
func ErrorClass(err error) string { return errorClass(err) }

// httpToolParams offers an agent's HTTP tools as functions.
func httpToolParams(tools []store.HTTPTool) []openai.ChatCompletionToolUnionParam {
	out := make([]openai.ChatCompletionToolUnionParam, 0, len(tools))
	for _, t := range tools {
		def := shared.FunctionDefinitionParam{Name: t.Name, Parameters: shared.FunctionParameters(t.Parameters)}
		if t.Description != "" {
			def.Description = openai.String(t.Description)
		}
		out = append(out, openai.ChatCompletionFunctionTool(def))
	}
	return out
}

// toolRoundMessages replays a turn's tool rounds: the assistant's calls,
// then one tool message per result.
func toolRoundMessages(rounds []ToolRound) []openai.ChatCompletionMessageParamUnion {
	var msgs []openai.ChatCompletionMessageParamUnion
	for _, r := range rounds {
		asst := openai.ChatCompletionAssistantMessageParam{}
		for _, c := range r.Calls {
			asst.ToolCalls = append(asst.ToolCalls, openai.ChatCompletionMessageToolCallUnionParam{
				OfFunction: &openai.ChatCompletionMessageFunctionToolCallParam{
					ID:       c.ID,
					Function: openai.ChatCompletionMessageFunctionToolCallFunctionParam{Name: c.Name, Arguments: c.Arguments},
				},
			})
		}
		msgs = append(msgs, openai.ChatCompletionMessageParamUnion{OfAssistant: &asst})
		for i, c := range r.Calls {
			text := FailedToolResult("no result").Text
			if i < len(r.Results) {
				text = r.Results[i].Text
			}
			msgs = append(msgs, openai.ToolMessage(text, c.ID))
		}
	}
	return msgs
}

// knowledgePrompt gives the agent the passages found for the turn.
func knowledgePrompt(passages []store.Passage) string {
	if len(passages) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n\nPassages from the business's own documents that may answer the customer (use them only if they do):")
	for _, p := range passages {
		fmt.Fprintf(&b, "\n[%s #%d]\n%s", p.Doc, p.Ord, p.Body)
	}
	return b.String()
}
