// Package migrations holds Conversa's schema as numbered SQL files embedded in
// the binary, and applies them together with River's own migrations.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

//go:embed *.sql
var files embed.FS

// Pending is one migration not yet applied.
type Pending struct {
	Source  string // "river" or "conversa"
	Version int64
	Name    string
}

// Applied reports what Migrate did (or, with dryRun, would do).
type Applied struct {
	Pending []Pending
}

// Migrate applies River's migrations and then ours, idempotently. With dryRun
// it changes nothing and lists what is pending. Concurrent callers are safe:
// both tools serialise on advisory locks.
func Migrate(ctx context.Context, pool *pgxpool.Pool, dryRun bool) (Applied, error) {
	var out Applied

	migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return out, fmt.Errorf("river migrator: %w", err)
	}
	res, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, &rivermigrate.MigrateOpts{DryRun: dryRun})
	if err != nil {
		return out, fmt.Errorf("river migrate: %w", err)
	}
	for _, v := range res.Versions {
		out.Pending = append(out.Pending, Pending{Source: "river", Version: int64(v.Version), Name: v.Name})
	}

	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	provider, err := newProvider(db)
	if err != nil {
		return out, err
	}
	if dryRun {
		// Before River's tables exist the goose table may not exist either;
		// Status then reports every migration as pending, which is right.
		statuses, err := provider.Status(ctx)
		if err != nil {
			return out, fmt.Errorf("migration status: %w", err)
		}
		for _, s := range statuses {
			if s.State == goose.StatePending {
				out.Pending = append(out.Pending, Pending{Source: "conversa", Version: s.Source.Version, Name: s.Source.Path})
			}
		}
		return out, nil
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return out, fmt.Errorf("migrate: %w", err)
	}
	for _, r := range results {
		out.Pending = append(out.Pending, Pending{Source: "conversa", Version: r.Source.Version, Name: r.Source.Path})
	}
	return out, nil
}

func newProvider(db *sql.DB) (*goose.Provider, error) {
	sub, err := fs.Sub(files, ".")
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub,
		goose.WithTableName("conversa_schema_migrations"))
	if err != nil {
		return nil, fmt.Errorf("migration provider: %w", err)
	}
	return p, nil
}

// Files returns the embedded migration files (for tests that fingerprint the schema).
func Files() fs.FS { return files }
