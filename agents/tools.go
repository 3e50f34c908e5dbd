package agents

import (
	"encoding/json"
	"fmt"
	"strings"
)

// HTTP tools (docs/tools.md). An agent with HTTP tools may answer a turn
// with ToolCalls instead of text; the turn (package jobs) records and makes
// the calls, appends them with their results to Request.ToolRounds, and asks
// the agent again, at most MaxToolRounds times. The agent never calls an
// endpoint itself, so the record of each call is the turn's to keep.

// MaxToolRounds is the most rounds of tool calls in one turn; past it the
// agent is offered no tools and must answer.
const MaxToolRounds = 4

// ToolCall is one call of an HTTP tool the model asked for.
type ToolCall struct {
	// ID is the model's id for the call (its tool message answers it).
	ID   string
	Name string
	// Arguments is the JSON object the model gave.
	Arguments string
}

// ToolResult is what a call's endpoint answered, as the model is given it.
type ToolResult struct {
	// Text is the endpoint's answer (JSON or text), or, when Failed, a JSON
	// object saying why the call failed.
	Text   string
	Failed bool
}

// ToolRound is one round of a turn's tool calls: Results[i] answers Calls[i].
type ToolRound struct {
	Calls   []ToolCall
	Results []ToolResult
}

// OffersTools reports whether the agent may still call HTTP tools in this turn.
func OffersTools(req Request) bool {
	return len(req.Agent.HTTPTools) > 0 && len(req.ToolRounds) < MaxToolRounds
}

// FailedToolResult is the result a model is given for a call that failed:
// it knows the tool did not answer and can tell the customer.
func FailedToolResult(reason string) ToolResult {
	b, _ := json.Marshal(map[string]string{"error": "the tool failed: " + reason + "; it may not have done anything"})
	return ToolResult{Text: string(b), Failed: true}
}

// offlineToolCalls are the calls the offline agent makes: each HTTP tool one
// of whose keywords the customer wrote, once per turn, with the customer's
// words as {"message": ...}.
func offlineToolCalls(req Request, normalized string) []ToolCall {
	if len(req.ToolRounds) > 0 || !OffersTools(req) {
		return nil
	}
	var calls []ToolCall
	args, _ := json.Marshal(map[string]string{"message": strings.Join(req.Pending, "\n")})
	for _, t := range req.Agent.HTTPTools {
		for _, k := range t.Keywords {
			if hasWord(normalized, k) {
				calls = append(calls, ToolCall{ID: fmt.Sprintf("offline_%d", len(calls)+1), Name: t.Name, Arguments: string(args)})
				break
			}
		}
	}
	return calls
}

// offlineToolAnswer is the offline agent's reply after its tool calls: each
// endpoint's "reply" (a JSON object's string field), else its answer
// quoted; a failed call says so.
func offlineToolAnswer(rounds []ToolRound) string {
	var parts []string
	for _, r := range rounds {
		for i, c := range r.Calls {
			if i >= len(r.Results) {
				break
			}
			res := r.Results[i]
			if res.Failed {
				parts = append(parts, fmt.Sprintf("Sorry, I could not reach %s just now; please try again later.", c.Name))
				continue
			}
			var obj map[string]any
			if json.Unmarshal([]byte(res.Text), &obj) == nil {
				if s, ok := obj["reply"].(string); ok && strings.TrimSpace(s) != "" {
					parts = append(parts, s)
					continue
				}
			}
			parts = append(parts, fmt.Sprintf("%s: %s", c.Name, strings.TrimSpace(res.Text)))
		}
	}
	return CleanReply(strings.Join(parts, " "))
}
