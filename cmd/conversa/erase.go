package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/api"
)

type contactEraseCmd struct {
	Tenant  string `required:"" help:"Tenant id."`
	Address string `arg:"" help:"The contact's address: +E.164 (every channel) or whatsapp:+E.164."`
	JSON    bool   `name:"json" help:"Print one JSON object."`
}

// Run erases a contact as DELETE /tenants/{id}/contacts/{address} does,
// through the same function, with "cli" in the audit record.
func (c *contactEraseCmd) Run(ctx context.Context, a *app) error {
	pool, err := a.openPool(ctx, false, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	rdb, err := a.openRedis()
	if err != nil {
		return err
	}
	if rdb != nil {
		defer rdb.Close()
	}
	// Insert-only: it cancels the contact's jobs and works none.
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("river client: %w", err)
	}
	erased, err := api.EraseContact(ctx, pool, rc, store.NewMemory(rdb, store.MemoryPrefix, 0), c.Tenant, c.Address, store.RequestedByCLI)
	var fe *api.FieldError
	switch {
	case errors.As(err, &fe):
		return fmt.Errorf("ADDRESS %q: want +E.164 (e.g. +15005550006, erased on every channel) or whatsapp:+E.164", c.Address)
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("tenant %q has no contact %q", c.Tenant, c.Address)
	case err != nil:
		return err
	}
	ids := make([]int64, len(erased))
	for i, e := range erased {
		ids[i] = e.ContactID
	}
	return a.print(c.JSON, map[string]any{"tenant_id": c.Tenant, "erased": erased}, "erased contact(s) %v; audit records written\n", ids)
}
