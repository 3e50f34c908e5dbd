package jobs

import (
	"context"
	"strings"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// knowledgePassages is how many passages of the knowledge base a turn gives
// its agent.
const knowledgePassages = 3

// turnKnowledge is what a turn found in the tenant's knowledge base.
type turnKnowledge struct {
	passages []store.Passage
	// events holds turn.knowledge (documents, passages, scores; never
	// their text) when anything was found.
	events []store.Event
}

// knowledge searches the tenant's documents for the customer's pending
// messages, for the agent that answers.
func (w *ReplyWorker) knowledge(ctx context.Context, a jobargs.ReplyArgs, agent agents.Agent, pending []string) (turnKnowledge, error) {
	found, err := store.SearchKnowledge(ctx, w.db, a.TenantID, agent.Name, strings.Join(pending, "\n"), knowledgePassages)
	if err != nil || len(found) == 0 {
		return turnKnowledge{}, err
	}
	return turnKnowledge{passages: found, events: []store.Event{{Kind: "turn.knowledge", Detail: map[string]any{
		"agent": agent.Name, "passages": found}}}}, nil
}
