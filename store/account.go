package store

import (
	"context"
	"fmt"
	"strings"
)

// KindOf is ChannelWhatsApp for a "whatsapp:" address and ChannelSMS otherwise.
func KindOf(address string) ChannelKind {
	if strings.HasPrefix(address, "whatsapp:") {
		return ChannelWhatsApp
	}
	return ChannelSMS
}

// Account is a tenant's Twilio account with its numbers.
type Account struct {
	ID         int64    `json:"id"`
	TenantID   string   `json:"tenant_id"`
	AccountSID string   `json:"account_sid"`
	Numbers    []string `json:"numbers"`
}

// AddAccount stores a tenant's Twilio account (the token already sealed) and
// attaches numbers to it. For a SID the tenant already has it updates the
// token and adds the numbers. A number another tenant owns is ErrDuplicate.
func AddAccount(ctx context.Context, db DBTX, tenantID, accountSID string, tokenSealed []byte, numbers []string) (Account, error) {
	accountSID = strings.TrimSpace(accountSID)
	if accountSID == "" {
		return Account{}, fmt.Errorf("add account: account SID is empty")
	}
	acc := Account{TenantID: tenantID, AccountSID: accountSID}
	err := db.QueryRow(ctx, `
		INSERT INTO twilio_accounts (tenant_id, account_sid, auth_token_enc) VALUES ($1, $2, $3)
		ON CONFLICT (tenant_id, account_sid) DO UPDATE SET auth_token_enc = EXCLUDED.auth_token_enc, updated_at = now()
		RETURNING id`, tenantID, accountSID, tokenSealed).Scan(&acc.ID)
	if err != nil {
		if isForeignKeyViolation(err) {
			return Account{}, ErrNotFound
		}
		return Account{}, fmt.Errorf("add account: %w", notFound(err))
	}
	for _, n := range numbers {
		n = strings.TrimSpace(n)
		if n == "" {
			return Account{}, fmt.Errorf("add account: empty number")
		}
		// A number moves between accounts of the same tenant, never across tenants.
		tag, err := db.Exec(ctx, `
			INSERT INTO channels (tenant_id, account_id, address, kind) VALUES ($1, $2, $3, $4)
			ON CONFLICT (address) DO UPDATE SET account_id = EXCLUDED.account_id
			WHERE channels.tenant_id = EXCLUDED.tenant_id`,
			tenantID, acc.ID, n, KindOf(n))
		if err != nil {
			return Account{}, fmt.Errorf("add number: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return Account{}, fmt.Errorf("add number: %w", Refuse(ErrDuplicate, "the number belongs to another tenant"))
		}
	}
	rows, err := db.Query(ctx, `SELECT address FROM channels WHERE account_id = $1 AND tenant_id = $2 ORDER BY address`, acc.ID, tenantID)
	if err != nil {
		return Account{}, fmt.Errorf("list numbers: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return Account{}, fmt.Errorf("list numbers: %w", err)
		}
		acc.Numbers = append(acc.Numbers, a)
	}
	return acc, rows.Err()
}

// Channel is one of a tenant's numbers together with the account that owns it:
// everything the webhook and the sender need to act for that number.
type Channel struct {
	ID                 int64    `db:"id"`
	TenantID           string   `db:"tenant_id"`
	AccountID          int64    `db:"account_id"`
	Address            string   `db:"address"`
	Kind               string   `db:"kind"`
	RatePerSecond      *float64 `db:"rate_per_second"`
	TemplateContentSID *string  `db:"template_content_sid"`
	TemplateVariables  []byte   `db:"template_variables"`
	AccountSID         string   `db:"account_sid"`
	AuthTokenSealed    []byte   `db:"auth_token_enc"`
}

const channelSelect = `
	SELECT c.id, c.tenant_id, c.account_id, c.address, c.kind, c.rate_per_second,
	       c.template_content_sid, c.template_variables, a.account_sid, a.auth_token_enc
	FROM channels c JOIN twilio_accounts a ON a.id = c.account_id`

// ChannelByAddress resolves a number ("+1500..." or "whatsapp:+1...") to its channel.
func ChannelByAddress(ctx context.Context, db DBTX, address string) (Channel, error) {
	rows, err := db.Query(ctx, channelSelect+` WHERE c.address = $1`, address)
	if err != nil {
		return Channel{}, fmt.Errorf("channel by address: %w", err)
	}
	ch, err := collectChannel(rows)
	if err != nil {
		return Channel{}, fmt.Errorf("channel by address: %w", err)
	}
	return ch, nil
}
