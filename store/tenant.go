package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Tenant is one business using Conversa.
type Tenant struct {
	ID         string    `db:"id" json:"id"`
	Name       string    `db:"name" json:"name"`
	Credits    int64     `db:"credits" json:"credits"`
	ReplyPrice int       `db:"reply_price" json:"reply_price"`
	CreatedAt  time.Time `db:"created_at" json:"created_at"`
}

// tenantColumns reads a tenant; its balance is the sum of its credit stripes.
var tenantColumns = `id, name, ` + balanceOf("tenants.id") + ` AS credits, reply_price, created_at`

// balanceOf is the SQL for the credit balance of the tenant whose id is the
// expression tenantID.
func balanceOf(tenantID string) string {
	return `(SELECT COALESCE(sum(s.credits), 0) FROM credit_stripes s WHERE s.tenant_id = ` + tenantID + `)::bigint`
}

// NewTenantKeys are a new tenant's secrets, shown once: the API key (only
// its hash is stored) and the signing secret (stored sealed, since it signs).
type NewTenantKeys struct {
	APIKey        string
	SigningSecret string
}

// CreateTenant inserts a tenant with a fresh API key and signing secret,
// together with its default agent, so a new tenant can answer from its first
// message. The keys are returned once.
func CreateTenant(ctx context.Context, db DBTX, sealer *Sealer, name string) (Tenant, NewTenantKeys, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return Tenant{}, NewTenantKeys{}, fmt.Errorf("create tenant: name is empty")
	}
	if sealer == nil {
		return Tenant{}, NewTenantKeys{}, fmt.Errorf("create tenant: no sealer for the signing secret")
	}
	var keys NewTenantKeys
	var err error
	if keys.APIKey, err = newAPIKey(); err != nil {
		return Tenant{}, NewTenantKeys{}, err
	}
	if keys.SigningSecret, err = newSigningSecret(); err != nil {
		return Tenant{}, NewTenantKeys{}, err
	}
	sealed, err := sealer.Seal(keys.SigningSecret)
	if err != nil {
		return Tenant{}, NewTenantKeys{}, err
	}
	rows, err := db.Query(ctx, `
		WITH t AS (
			INSERT INTO tenants (name, api_key_hash, signing_secret_enc) VALUES ($1, $2, $5)
			RETURNING id, name, 0::bigint AS credits, reply_price, created_at
		), a AS (
			INSERT INTO agents (tenant_id, name, system_prompt, is_default, keywords, faq)
			SELECT t.id, 'assistant', $3, true, '{}', $4 FROM t
		)
		SELECT * FROM t`,
		name, HashAPIKey(keys.APIKey), DefaultAgentPrompt, DefaultAgentFAQ, sealed)
	if err != nil {
		return Tenant{}, NewTenantKeys{}, fmt.Errorf("create tenant: %w", err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Tenant])
	if err != nil {
		return Tenant{}, NewTenantKeys{}, fmt.Errorf("create tenant: %w", err)
	}
	return t, keys, nil
}

// DefaultAgentPrompt is the system prompt of the agent every tenant starts with.
const DefaultAgentPrompt = `You are a helpful, concise customer-service assistant for this business. ` +
	`Answer in the customer's language in at most three short sentences. ` +
	`If the customer asks for a person, or you cannot help, call the handoff_to_human tool.`

// DefaultAgentFAQ is the offline provider's keyword answers for the default agent.
const DefaultAgentFAQ = `[
 {"keywords": ["hello", "hi", "hey", "hola", "good morning"], "answer": "Hello! How can I help you today?"},
 {"keywords": ["hours", "open", "opening", "close"], "answer": "We are open Monday to Friday, 9:00 to 18:00."},
 {"keywords": ["price", "cost", "how much"], "answer": "Our prices are on our website; tell me what you need and I can point you to it."},
 {"keywords": ["thanks", "thank you", "gracias"], "answer": "You're welcome!"}
]`

// GetTenant returns one tenant.
func GetTenant(ctx context.Context, db DBTX, id string) (Tenant, error) {
	rows, err := db.Query(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = $1`, id)
	if err != nil {
		return Tenant{}, fmt.Errorf("get tenant: %w", err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Tenant])
	if err != nil {
		return Tenant{}, notFound(err)
	}
	return t, nil
}

// TenantByAPIKeyHash finds the tenant an API key belongs to.
func TenantByAPIKeyHash(ctx context.Context, db DBTX, hash []byte) (Tenant, error) {
	rows, err := db.Query(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE api_key_hash = $1`, hash)
	if err != nil {
		return Tenant{}, fmt.Errorf("tenant by api key: %w", err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Tenant])
	if err != nil {
		return Tenant{}, notFound(err)
	}
	return t, nil
}

// AddCredits tops a tenant up by amount (> 0), spread evenly over its
// credit stripes, and returns the new balance.
func AddCredits(ctx context.Context, db DBTX, tenantID string, amount int64) (int64, error) {
	if amount <= 0 {
		return 0, fmt.Errorf("add credits: amount must be positive")
	}
	var balance int64
	// Stripes are locked in stripe order, as the debit's slow path does.
	err := db.QueryRow(ctx, `
		WITH l AS (
			INSERT INTO credit_ledger (tenant_id, amount, reason) VALUES ($1, $2, 'topup')
		), s AS (
			INSERT INTO credit_stripes (tenant_id, stripe, credits)
			SELECT $1, g, $2 / $3 + CASE WHEN g < $2 % $3 THEN 1 ELSE 0 END
			FROM generate_series(0, $3 - 1) g
			ORDER BY g
			ON CONFLICT (tenant_id, stripe) DO UPDATE SET credits = credit_stripes.credits + EXCLUDED.credits
		)
		SELECT `+balanceOf("$1")+` + $2`,
		tenantID, amount, creditStripes).Scan(&balance)
	if err != nil {
		if isForeignKeyViolation(err) {
			return 0, ErrNotFound
		}
		return 0, fmt.Errorf("add credits: %w", notFound(err))
	}
	return balance, nil
}
