package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// FAQEntry is one offline keyword answer of an agent (agents.faq).
type FAQEntry struct {
	Keywords []string `json:"keywords"`
	Answer   string   `json:"answer"`
}

// Agent is one of a tenant's agents as stored, and as package agents
// reads it (agents.Agent is this type).
type Agent struct {
	Name         string `db:"name" json:"name"`
	SystemPrompt string `db:"system_prompt" json:"system_prompt"`
	// Model overrides the provider's default model when set.
	Model string `db:"model" json:"model"`
	// Tools the agent may call; agents.ToolHandoff is the one Conversa knows.
	Tools []string `db:"tools" json:"tools"`
	// Keywords route a message to this agent when classifying offline.
	Keywords []string `db:"keywords" json:"keywords"`
	// FAQ answers offline.
	FAQ       []FAQEntry `db:"faq" json:"faq"`
	IsDefault bool       `db:"is_default" json:"is_default"`
	// FallbackMessage is the notice sent when the bot gives up on an
	// unavailable LLM and hands the conversation to a person ("" = the
	// built-in agents.DefaultFallbackMessage; migration 0006).
	FallbackMessage string `db:"fallback_message" json:"fallback_message"`
	// Vision gives the agent the customer's images as image parts (the
	// model must accept them); without it an image reads "[image]"
	// (migration 0009).
	Vision bool `db:"vision" json:"vision"`
	// HTTPTools are the business's endpoints the agent may call
	// (migration 0012; docs/tools.md).
	HTTPTools []HTTPTool `db:"http_tools" json:"http_tools"`
	UpdatedAt time.Time  `db:"updated_at" json:"updated_at"`
}

// HTTPTool is one of an agent's HTTP tools: the model calls it by Name with
// arguments matching Parameters (a JSON Schema object), and Conversa POSTs
// them to URL (docs/tools.md).
type HTTPTool struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Parameters  map[string]any `json:"parameters"`
	URL         string         `json:"url"`
	// Keywords make the offline agent call the tool when the customer's
	// words contain one (the model decides for itself).
	Keywords []string `json:"keywords,omitempty"`
}

// listAgentsSQL reads a tenant's agents, the default first, then by name
// (see GetTurnInputs).
const listAgentsSQL = `
		SELECT name, system_prompt, model, tools, keywords, faq, is_default, fallback_message, vision, http_tools, updated_at
		FROM agents WHERE tenant_id = $1 ORDER BY is_default DESC, name`

// PutAgent creates or replaces a tenant's agent by name and reports whether
// it was created. isDefault nil keeps the agent's current flag (false for a
// new one); true makes it the tenant's only default agent.
func PutAgent(ctx context.Context, db DBTX, tenantID string, a Agent, isDefault *bool) (Agent, bool, error) {
	if a.Tools == nil {
		a.Tools = []string{"handoff_to_human"}
	}
	if a.Keywords == nil {
		a.Keywords = []string{}
	}
	if a.FAQ == nil {
		a.FAQ = []FAQEntry{}
	}
	if a.HTTPTools == nil {
		a.HTTPTools = []HTTPTool{}
	}
	faq, err := json.Marshal(a.FAQ)
	if err != nil {
		return Agent{}, false, fmt.Errorf("put agent: %w", err)
	}
	var out Agent
	var created bool
	err = db.QueryRow(ctx, `
		WITH up AS (
			INSERT INTO agents (tenant_id, name, system_prompt, model, tools, keywords, faq, is_default, fallback_message, vision, http_tools)
			VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8::boolean, false), $9, $10, $11)
			ON CONFLICT (tenant_id, name) DO UPDATE SET
				system_prompt = EXCLUDED.system_prompt, model = EXCLUDED.model, tools = EXCLUDED.tools,
				keywords = EXCLUDED.keywords, faq = EXCLUDED.faq, fallback_message = EXCLUDED.fallback_message,
				vision = EXCLUDED.vision, http_tools = EXCLUDED.http_tools,
				is_default = COALESCE($8::boolean, agents.is_default), updated_at = now()
			RETURNING name, system_prompt, model, tools, keywords, faq, is_default, fallback_message, vision, http_tools, updated_at, xmax = 0 AS created
		), others AS (
			UPDATE agents SET is_default = false, updated_at = now()
			WHERE tenant_id = $1 AND name <> $2 AND is_default AND $8::boolean IS TRUE
		)
		SELECT name, system_prompt, model, tools, keywords, faq, is_default, fallback_message, vision, http_tools, updated_at, created FROM up`,
		tenantID, a.Name, a.SystemPrompt, a.Model, a.Tools, a.Keywords, faq, isDefault, a.FallbackMessage, a.Vision, a.HTTPTools,
	).Scan(&out.Name, &out.SystemPrompt, &out.Model, &out.Tools, &out.Keywords, &faq, &out.IsDefault, &out.FallbackMessage, &out.Vision, &out.HTTPTools, &out.UpdatedAt, &created)
	if err != nil {
		if isForeignKeyViolation(err) {
			return Agent{}, false, ErrNotFound
		}
		return Agent{}, false, fmt.Errorf("put agent: %w", notFound(err))
	}
	if err := json.Unmarshal(faq, &out.FAQ); err != nil {
		return Agent{}, false, fmt.Errorf("put agent: %w", err)
	}
	return out, created, nil
}
