package agents

import (
	"context"
	"fmt"
	"strings"
	"unicode"
)

// Route is the routing agent's decision, recorded in the turn's trace.
type Route struct {
	Agent  string `json:"agent"`
	Reason string `json:"reason"`
	// By is how the choice was made: "single", "keywords", "current"
	// (the conversation's current agent), "llm" or "default".
	By string `json:"by"`
	// Classifier says whether the routing classifier ran for this turn.
	Classifier string `json:"classifier"`
	Usage      *Usage `json:"usage,omitempty"`
}

// Whether the routing classifier ran (Route.Classifier).
const (
	// ClassifierNotNeeded: the tenant has at most one agent.
	ClassifierNotNeeded = "not_needed"
	// ClassifierSkipped: the keyword rules or the current agent decided.
	ClassifierSkipped = "skipped"
	// ClassifierCalled: the provider was asked (offline, that costs nothing).
	ClassifierCalled = "called"
)

// DefaultAgent is the agent used when a tenant has none configured.
func DefaultAgent() Agent {
	return Agent{
		Name:         "assistant",
		SystemPrompt: "You are a helpful, concise customer-service assistant. Answer in at most three short sentences.",
		Tools:        []string{ToolHandoff},
		IsDefault:    true,
	}
}

// Choose is the routing agent: it picks the agent that answers this turn.
// With one agent there is nothing to decide. With several, the cheapest
// rule that decides wins, so the classifier (a second LLM call for openai)
// runs only when nothing else can tell: first the keyword rules (one agent
// matches best), then the conversation's current agent (req.CurrentAgent,
// the one that answered last), then the provider's classifier, and the
// tenant's default agent takes what none of them claims. Route.By and
// Route.Classifier say which way was taken. A classification error is not
// fatal: the turn goes on with the default agent.
func Choose(ctx context.Context, p Provider, all []Agent, req Request) (Agent, Route) {
	switch len(all) {
	case 0:
		a := DefaultAgent()
		return a, Route{Agent: a.Name, By: "default", Reason: "tenant has no agents configured", Classifier: ClassifierNotNeeded}
	case 1:
		return all[0], Route{Agent: all[0].Name, By: "single", Reason: "tenant has one agent", Classifier: ClassifierNotNeeded}
	}
	if a, kw, ok := byKeywords(all, req.Pending); ok {
		return a, Route{Agent: a.Name, By: "keywords", Reason: fmt.Sprintf("matched keyword %q", kw), Classifier: ClassifierSkipped}
	}
	if a, ok := byName(all, req.CurrentAgent); ok && req.CurrentAgent != "" {
		return a, Route{Agent: a.Name, By: "current", Reason: "the agent already answering this conversation; no keyword points elsewhere", Classifier: ClassifierSkipped}
	}
	var llmNote string
	if p != nil {
		name, reason, usage, err := p.Classify(ctx, all, req)
		var u *Usage
		if usage.Provider != "" {
			u = &usage
		}
		if err != nil {
			llmNote = fmt.Sprintf("classification failed (%s); ", errorClass(err))
		} else if a, ok := byName(all, name); ok {
			return a, Route{Agent: a.Name, By: "llm", Reason: reason, Usage: u, Classifier: ClassifierCalled}
		} else if name != "" {
			llmNote = "classifier named no known agent; "
		}
	}
	for _, a := range all {
		if a.IsDefault {
			return a, Route{Agent: a.Name, By: "default", Reason: llmNote + "no keyword matched; tenant's default agent", Classifier: ClassifierCalled}
		}
	}
	return all[0], Route{Agent: all[0].Name, By: "default", Reason: llmNote + "no keyword matched and no default agent; first agent", Classifier: ClassifierCalled}
}

// byKeywords is the keyword rule: the agent whose keywords the pending
// messages hit most often, and the first keyword it matched. A tie between
// agents decides nothing.
func byKeywords(all []Agent, pending []string) (Agent, string, bool) {
	text := normalize(strings.Join(pending, " "))
	best, bestHits, bestKW, tie := -1, 0, "", false
	for i, a := range all {
		hits, kw := 0, ""
		for _, k := range a.Keywords {
			if hasWord(text, k) {
				hits++
				if kw == "" {
					kw = k
				}
			}
		}
		switch {
		case hits > bestHits:
			best, bestHits, bestKW, tie = i, hits, kw, false
		case hits > 0 && hits == bestHits:
			tie = true
		}
	}
	if best < 0 || tie {
		return Agent{}, "", false
	}
	return all[best], bestKW, true
}

func byName(all []Agent, name string) (Agent, bool) {
	name = strings.TrimSpace(strings.ToLower(name))
	for _, a := range all {
		if a.Name == name {
			return a, true
		}
	}
	return Agent{}, false
}

// normalize lowercases text and turns every run of non-letters and
// non-digits into one space, padded, so hasWord matches whole words only
// ("hi" is not in "this").
func normalize(s string) string {
	var b strings.Builder
	b.WriteByte(' ')
	space := true
	for _, r := range strings.ToLower(s) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(r)
			space = false
		} else if !space {
			b.WriteByte(' ')
			space = true
		}
	}
	if !space {
		b.WriteByte(' ')
	}
	return b.String()
}

// hasWord reports whether the normalized text contains keyword as whole words.
func hasWord(normalized, keyword string) bool {
	k := strings.TrimSpace(normalize(keyword))
	return k != "" && strings.Contains(normalized, " "+k+" ")
}
