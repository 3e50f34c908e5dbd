package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/conversa/conversa/migrations"
	"github.com/conversa/conversa/store"
)

type migrateCmd struct {
	DryRun bool `name:"dry-run" help:"List pending migrations; change nothing."`
}

// Run applies (or lists) pending migrations.
func (m *migrateCmd) Run(ctx context.Context, a *app) error {
	pool, err := a.openPool(ctx, !m.DryRun, 4)
	if err != nil {
		return err
	}
	defer pool.Close()
	res, err := migrations.Migrate(ctx, pool, m.DryRun)
	if err != nil {
		return err
	}
	verb := "applied"
	if m.DryRun {
		verb = "pending"
	}
	if len(res.Pending) == 0 {
		fmt.Fprintf(a.stdout, "no migrations %s: the schema is up to date\n", verb)
		return nil
	}
	for _, p := range res.Pending {
		fmt.Fprintf(a.stdout, "%s %s %d %s\n", verb, p.Source, p.Version, p.Name)
	}
	return nil
}

type tenantCreateCmd struct {
	Name string `required:"" help:"The business's name."`
	JSON bool   `name:"json" help:"Print one JSON object."`
}

// Run creates a tenant and prints its id and API key (shown only once).
func (t *tenantCreateCmd) Run(ctx context.Context, a *app) error {
	if strings.TrimSpace(t.Name) == "" {
		return errors.New("--name must not be empty")
	}
	pool, err := a.openPool(ctx, false, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	sealer, err := store.NewSealer(a.cfg.SecretKeys...)
	if err != nil {
		return err
	}
	ten, keys, err := store.CreateTenant(ctx, pool, sealer, t.Name)
	if err != nil {
		return err
	}
	return a.print(t.JSON, map[string]any{"id": ten.ID, "name": ten.Name, "api_key": keys.APIKey, "signing_secret": keys.SigningSecret},
		"tenant %s created\nid:             %s\napi_key:        %s (shown once; store it now)\nsigning_secret: %s (shown once; signs tool calls and event webhooks)\n",
		ten.Name, ten.ID, keys.APIKey, keys.SigningSecret)
}

type accountAddCmd struct {
	Tenant string   `required:"" help:"Tenant id."`
	SID    string   `name:"sid" required:"" help:"Twilio account SID (AC...)."`
	Token  string   `required:"" help:"Twilio auth token (stored encrypted)."`
	Number []string `required:"" sep:"none" help:"A number this account serves for the tenant: +15005550006 or whatsapp:+14155238886. Repeat for more."`
	JSON   bool     `name:"json" help:"Print one JSON object."`
}

// Run stores the account (token sealed) and attaches the numbers.
func (c *accountAddCmd) Run(ctx context.Context, a *app) error {
	if strings.TrimSpace(c.Token) == "" {
		return errors.New("--token must not be empty")
	}
	for _, n := range c.Number {
		if err := validNumber(n); err != nil {
			return err
		}
	}
	pool, err := a.openPool(ctx, false, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	acc, err := a.addAccount(ctx, pool, c.Tenant, c.SID, c.Token, c.Number)
	if err != nil {
		return err
	}
	return a.print(c.JSON, map[string]any{"id": acc.ID, "tenant_id": acc.TenantID, "account_sid": acc.AccountSID, "numbers": acc.Numbers},
		"account %s on tenant %s serves: %s\n", acc.AccountSID, acc.TenantID, strings.Join(acc.Numbers, ", "))
}

// validNumber accepts Twilio's address forms: +E.164 or whatsapp:+E.164.
func validNumber(n string) error {
	if !store.ValidNumber(n) {
		return fmt.Errorf("--number %q: want +E.164 (e.g. +15005550006) or whatsapp:+E.164", n)
	}
	return nil
}

type creditsAddCmd struct {
	Tenant string `required:"" help:"Tenant id."`
	Amount int64  `required:"" help:"Credits to add (a reply costs 1 by default)."`
	JSON   bool   `name:"json" help:"Print one JSON object."`
}

// Run tops a tenant up and prints the new balance.
func (c *creditsAddCmd) Run(ctx context.Context, a *app) error {
	if c.Amount <= 0 {
		return errors.New("--amount must be a positive number")
	}
	pool, err := a.openPool(ctx, false, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	balance, err := store.AddCredits(ctx, pool, c.Tenant, c.Amount)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no tenant with id %q", c.Tenant)
	}
	if err != nil {
		return err
	}
	return a.print(c.JSON, map[string]any{"tenant_id": c.Tenant, "balance": balance}, "balance: %d\n", balance)
}

// print writes v as one JSON object, or the human format.
func (a *app) print(asJSON bool, v any, format string, args ...any) error {
	if asJSON {
		return json.NewEncoder(a.stdout).Encode(v)
	}
	_, err := fmt.Fprintf(a.stdout, format, args...)
	return err
}

// addAccount seals token with SECRET_KEY and stores the account and its
// numbers in one transaction.
func (a *app) addAccount(ctx context.Context, pool *pgxpool.Pool, tenantID, sid, token string, numbers []string) (store.Account, error) {
	sealer, err := store.NewSealer(a.cfg.SecretKeys...)
	if err != nil {
		return store.Account{}, err
	}
	sealed, err := sealer.Seal(token)
	if err != nil {
		return store.Account{}, err
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return store.Account{}, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	acc, err := store.AddAccount(ctx, tx, tenantID, sid, sealed, numbers)
	if errors.Is(err, store.ErrNotFound) {
		return store.Account{}, fmt.Errorf("no tenant with id %q", tenantID)
	}
	if err != nil {
		return store.Account{}, err
	}
	return acc, tx.Commit(ctx)
}
