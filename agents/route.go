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
	// By is how the choice was made: "single", "llm", "keywords" or "default".
	By    string `json:"by"`
	Usage *Usage `json:"usage,omitempty"`
}

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
// With one agent there is nothing to decide. With several, the provider
// classifies (an LLM for openai); when it has no usable answer the keyword
// rules decide, and the tenant's default agent takes what no rule claims.
// A classification error is not fatal: the turn goes on with the rules.
func Choose(ctx context.Context, p Provider, all []Agent, req Request) (Agent, Route) {
	switch len(all) {
	case 0:
		a := DefaultAgent()
		return a, Route{Agent: a.Name, By: "default", Reason: "tenant has no agents configured"}
	case 1:
		return all[0], Route{Agent: all[0].Name, By: "single", Reason: "tenant has one agent"}
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
			return a, Route{Agent: a.Name, By: "llm", Reason: reason, Usage: u}
		} else if name != "" {
			llmNote = "classifier named no known agent; "
		}
	}
	text := normalize(strings.Join(req.Pending, " "))
	best, bestHits, bestKW := -1, 0, ""
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
		if hits > bestHits {
			best, bestHits, bestKW = i, hits, kw
		}
	}
	if best >= 0 {
		a := all[best]
		return a, Route{Agent: a.Name, By: "keywords", Reason: fmt.Sprintf("%smatched keyword %q", llmNote, bestKW)}
	}
	for _, a := range all {
		if a.IsDefault {
			return a, Route{Agent: a.Name, By: "default", Reason: llmNote + "no keyword matched; tenant's default agent"}
		}
	}
	return all[0], Route{Agent: all[0].Name, By: "default", Reason: llmNote + "no keyword matched and no default agent; first agent"}
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
