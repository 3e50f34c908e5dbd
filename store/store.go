package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DBTX is what every store function runs on: *pgxpool.Pool, *pgx.Conn or pgx.Tx.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

var (
	// ErrNotFound is returned when a row the caller named does not exist (or
	// belongs to another tenant: the two are indistinguishable on purpose).
	ErrNotFound = errors.New("not found")
	// ErrDuplicate is returned when a row that must be unique already exists.
	ErrDuplicate = errors.New("duplicate")
	// ErrConflict is returned when an optimistic-lock version did not match.
	ErrConflict = errors.New("conflict")
)

// isUniqueViolation reports whether err is Postgres' 23505 unique_violation.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// notFound maps "no such row" to ErrNotFound: pgx.ErrNoRows, and an id that
// is not even a valid uuid (22P02), which names no row either.
func notFound(err error) error {
	var pgErr *pgconn.PgError
	if errors.Is(err, pgx.ErrNoRows) || (errors.As(err, &pgErr) && pgErr.Code == "22P02") {
		return ErrNotFound
	}
	return err
}

// isForeignKeyViolation reports whether err is Postgres' 23503 foreign_key_violation.
func isForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}

func collectChannel(rows pgx.Rows) (Channel, error) {
	ch, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Channel])
	return ch, notFound(err)
}
