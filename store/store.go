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
	// ErrConflict is returned when an optimistic-lock version did not match,
	// or a change is not possible in the row's state (a Refusal says why).
	ErrConflict = errors.New("conflict")
)

// Refusal is an error whose Reason a person may read: what they asked for is
// refused, of a kind a caller branches on (ErrConflict, ErrDuplicate, an
// edge's own invalid-input sentinel). It wraps Kind, so errors.Is(err, Kind)
// holds; the edges show Reason (RefusalReason) rather than cutting it out
// of the error's text.
type Refusal struct {
	Kind   error
	Reason string
}

// Refuse returns a Refusal of kind with reason.
func Refuse(kind error, reason string) error { return &Refusal{Kind: kind, Reason: reason} }

func (e *Refusal) Error() string { return e.Kind.Error() + ": " + e.Reason }

// Unwrap returns the Refusal's kind.
func (e *Refusal) Unwrap() error { return e.Kind }

// RefusalReason is the reason of the Refusal in err's chain, or "" when
// there is none.
func RefusalReason(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return ""
}

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
