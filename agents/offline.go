package agents

import (
	"context"
	"strings"
	"time"
)

// OfflineFallback is the offline answer when no FAQ entry matches.
const OfflineFallback = "Thanks for your message! I can help with our opening hours and prices; " +
	"write \"human\" any time to talk to a person."

// handoffWords make the offline provider call ToolHandoff.
var handoffWords = []string{"human", "agent", "person", "operator", "representative"}

// Offline is the deterministic provider: FAQ keyword answers per agent, the
// best passage of the tenant's knowledge base when no FAQ rule matches, a
// fallback answer, a handoff when the customer asks for a person, and HTTP
// tools called by their keywords (tools.go). It
// makes no network calls, so it is always available (tests, the demo).
type Offline struct{}

// NewOffline returns the offline provider.
func NewOffline() Offline { return Offline{} }

// Name implements Provider.
func (Offline) Name() string { return "offline" }

// Reply implements Provider.
func (Offline) Reply(ctx context.Context, req Request) (Answer, error) {
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return Answer{}, err
	}
	text := normalize(strings.Join(req.Pending, " "))
	ans := Answer{}
	if CanHandoff(req.Agent) {
		for _, w := range handoffWords {
			if hasWord(text, w) {
				ans.Handoff = true
				ans.HandoffReason = "customer asked for a person"
				ans.Text = HandoffNotice
				break
			}
		}
	}
	if !ans.Handoff {
		ans.ToolCalls = offlineToolCalls(req, text)
	}
	if !ans.Handoff && len(ans.ToolCalls) == 0 && len(req.ToolRounds) > 0 {
		ans.Text = offlineToolAnswer(req.ToolRounds)
	}
	if !ans.Handoff && len(ans.ToolCalls) == 0 && ans.Text == "" {
		var parts []string
		for _, f := range req.Agent.FAQ {
			for _, k := range f.Keywords {
				if hasWord(text, k) {
					parts = appendOnce(parts, f.Answer)
					break
				}
			}
			if len(parts) == 3 {
				break
			}
		}
		if len(parts) == 0 && len(req.Knowledge) > 0 {
			// No FAQ rule: the best passage of the tenant's documents.
			parts = []string{req.Knowledge[0].Body}
		}
		if len(parts) == 0 {
			parts = []string{OfflineFallback}
		}
		ans.Text = CleanReply(strings.Join(parts, " "))
	}
	prompt := []string{req.Agent.SystemPrompt, req.Summary}
	for _, t := range req.History {
		prompt = append(prompt, t.Text)
	}
	prompt = append(prompt, req.Pending...)
	lat := time.Since(start)
	ans.Usage = Usage{
		Provider: "offline", Model: "offline-rules",
		PromptTokens: estimateTokens(prompt...), CompletionTokens: estimateTokens(ans.Text),
		Estimated: true, Latency: lat, LatencyMS: lat.Milliseconds(), Attempts: 1,
	}
	return ans, nil
}

// Classify implements Provider: offline, the keyword rules decide.
func (Offline) Classify(ctx context.Context, agents []Agent, req Request) (string, string, Usage, error) {
	return "", "", Usage{}, nil
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
