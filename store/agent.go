package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// FAQEntry is one offline keyword answer of an agent (agents.faq).
type FAQEntry struct {
	Keywords []string `json:"keywords"`
	Answer   string   `json:"answer"`
}

// Agent is one of a tenant's agents as stored.
type Agent struct {
	Name         string     `db:"name" json:"name"`
	SystemPrompt string     `db:"system_prompt" json:"system_prompt"`
	Model        string     `db:"model" json:"model"`
	Tools        []string   `db:"tools" json:"tools"`
	Keywords     []string   `db:"keywords" json:"keywords"`
	FAQ          []FAQEntry `db:"faq" json:"faq"`
	IsDefault    bool       `db:"is_default" json:"is_default"`
}

// ListAgents returns a tenant's agents, the default first, then by name.
func ListAgents(ctx context.Context, db DBTX, tenantID string) ([]Agent, error) {
	rows, err := db.Query(ctx, `
		SELECT name, system_prompt, model, tools, keywords, faq, is_default
		FROM agents WHERE tenant_id = $1 ORDER BY is_default DESC, name`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[Agent])
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return list, nil
}
