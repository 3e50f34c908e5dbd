// Package testdb gives tests a real, migrated Postgres database and a real
// Redis, with fixtures that make unique values so tests never collide.
//
// Each test binary (one per package) gets its own database, copied from a
// migrated template that is built once per schema version; Run drops it at
// the end. Tests that can run inside a transaction use Tx, which is rolled
// back at cleanup.
package testdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/conversa/conversa/migrations"
)

// AdminURL is the server used for tests: TEST_DATABASE_URL, or the local one.
func AdminURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://root@127.0.0.1:5432/postgres?sslmode=disable"
}

// withDatabase returns base with its database name replaced.
func withDatabase(base, name string) string {
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		panic(err)
	}
	u := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
	if cfg.Password != "" {
		u = fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Password, cfg.Host, cfg.Port, name)
	}
	return u
}

// The per-binary database. A test binary is one process, so this is the one
// place where shared state is the point.
var shared struct {
	once sync.Once
	url  string
	name string
	err  error
	pool *pgxpool.Pool
}

// Run runs a package's tests and then drops the package's database.
// Use it from TestMain: func TestMain(m *testing.M) { testdb.Run(m) }
func Run(m *testing.M) {
	code := m.Run()
	if shared.pool != nil {
		shared.pool.Close()
	}
	if shared.name != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if conn, err := pgx.Connect(ctx, AdminURL()); err == nil {
			_, _ = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{shared.name}.Sanitize()+` WITH (FORCE)`)
			_ = conn.Close(ctx)
		}
		cancel()
	}
	os.Exit(code)
}

// URL returns the connection string of this test binary's migrated database,
// creating it on first use.
func URL(t testing.TB) string {
	t.Helper()
	shared.once.Do(func() {
		shared.name, shared.err = createDatabase()
		if shared.err != nil {
			return
		}
		shared.url = withDatabase(AdminURL(), shared.name)
		cfg, err := pgxpool.ParseConfig(shared.url)
		if err != nil {
			shared.err = err
			return
		}
		cfg.MaxConns = 20
		shared.pool, shared.err = pgxpool.NewWithConfig(context.Background(), cfg)
	})
	if shared.err != nil {
		t.Fatalf("test database: %v", shared.err)
	}
	return shared.url
}

// Pool returns a pool on this test binary's database, shared by its tests.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	URL(t)
	return shared.pool
}

// NewPool returns a pool of the test's own on this binary's database, closed
// at cleanup (for tests that stop or break their pool on purpose).
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// OwnURL returns the connection string of a new migrated database of the
// test's own, dropped at cleanup: for a test whose server must not share
// River jobs with other tests' servers (they would work each other's sends).
func OwnURL(t testing.TB) string {
	t.Helper()
	name, err := createDatabase()
	if err != nil {
		t.Fatalf("test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, AdminURL()); err == nil {
			_, _ = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`)
			_ = conn.Close(ctx)
		}
	})
	return withDatabase(AdminURL(), name)
}

// Tx returns a transaction on the shared database that is rolled back at
// cleanup. Begin on it opens a savepoint, so code under test runs unchanged.
func Tx(t testing.TB) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := Pool(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// createDatabase copies the migrated template into a fresh database.
func createDatabase() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmpl, err := ensureTemplate(ctx)
	if err != nil {
		return "", err
	}
	conn, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return "", fmt.Errorf("connect %s: %w", AdminURL(), err)
	}
	defer conn.Close(ctx)
	name := "conversa_t_" + randomHex(6)
	// Copying a template fails while anyone is connected to it; retry briefly.
	for i := 0; ; i++ {
		_, err = conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()+` TEMPLATE `+pgx.Identifier{tmpl}.Sanitize())
		if err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return "", fmt.Errorf("create test database: %w", err)
	}
	return name, nil
}

// ensureTemplate builds the migrated template database for the current
// schema once; concurrent test binaries wait on an advisory lock.
func ensureTemplate(ctx context.Context) (string, error) {
	name := "conversa_tmpl_" + schemaHash()
	conn, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return "", fmt.Errorf("connect %s: %w", AdminURL(), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(727272)`); err != nil {
		return "", err
	}
	defer conn.Exec(ctx, `SELECT pg_advisory_unlock(727272)`) //nolint:errcheck
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_build"
	_, _ = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{building}.Sanitize()+` WITH (FORCE)`)
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{building}.Sanitize()); err != nil {
		return "", fmt.Errorf("create template: %w", err)
	}
	pool, err := pgxpool.New(ctx, withDatabase(AdminURL(), building))
	if err != nil {
		return "", err
	}
	_, err = migrations.Migrate(ctx, pool, false)
	pool.Close()
	if err != nil {
		return "", fmt.Errorf("migrate template: %w", err)
	}
	// Rename only once complete, so a half-built template is never used.
	if _, err := conn.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{building}.Sanitize()+` RENAME TO `+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("rename template: %w", err)
	}
	return name, nil
}

// schemaHash identifies the schema by the migration files' contents.
func schemaHash() string {
	h := sha256.New()
	_ = fs.WalkDir(migrations.Files(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".sql") {
			return err
		}
		b, err := fs.ReadFile(migrations.Files(), path)
		if err != nil {
			return err
		}
		h.Write([]byte(path))
		h.Write(b)
		return nil
	})
	// River's schema changes with its version; name it too.
	h.Write([]byte("river v0.51.1"))
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Unique returns a string unique across tests and test runs, for fixtures.
func Unique() string { return randomHex(6) }
