package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// IdempotencyTTL is how long an Idempotency-Key and its answer are kept.
const IdempotencyTTL = 24 * time.Hour

// ErrKeyInProgress is returned when a request with the same
// Idempotency-Key is still being answered after the wait.
var ErrKeyInProgress = errors.New("a request with this Idempotency-Key is still in progress")

// IdempotentAnswer is the stored answer to a request with an Idempotency-Key.
type IdempotentAnswer struct {
	RequestHash    []byte `db:"request_hash"`
	Status         int    `db:"status"`
	ResponseSealed []byte `db:"response_sealed"`
}

// ClaimIdempotencyKey takes keyHash for this request inside tx, which must
// stay open until SaveIdempotentAnswer and the request's own writes commit
// with it. claimed true: the key is new (or its record expired) and the
// caller answers the request. claimed false: the stored answer of an
// earlier request with the key (its RequestHash may differ from
// requestHash: the caller decides). A request holding the key in an open
// transaction makes this wait for it, at most wait (ErrKeyInProgress).
func ClaimIdempotencyKey(ctx context.Context, tx DBTX, keyHash, requestHash []byte, wait time.Duration) (claimed bool, prior IdempotentAnswer, err error) {
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, max(wait.Milliseconds(), 1))); err != nil {
		return false, prior, fmt.Errorf("claim idempotency key: %w", err)
	}
	// status 0 and no answer: only this transaction ever sees the row so,
	// since the answer is saved before it commits.
	var ok bool
	err = tx.QueryRow(ctx, `
		INSERT INTO idempotency_keys AS k (key_hash, request_hash, status, response_sealed, expires_at)
		VALUES ($1, $2, 0, '', now() + $3::float8 * interval '1 second')
		ON CONFLICT (key_hash) DO UPDATE SET request_hash = EXCLUDED.request_hash, status = 0, response_sealed = '',
			created_at = now(), expires_at = EXCLUDED.expires_at
		WHERE k.expires_at <= now()
		RETURNING true`, keyHash, requestHash, IdempotencyTTL.Seconds()).Scan(&ok)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "55P03": // lock_not_available
		return false, prior, ErrKeyInProgress
	case errors.Is(err, pgx.ErrNoRows):
		// A live record: the earlier request's answer.
		rows, err := tx.Query(ctx, `SELECT request_hash, status, response_sealed FROM idempotency_keys WHERE key_hash = $1`, keyHash)
		if err != nil {
			return false, prior, fmt.Errorf("claim idempotency key: %w", err)
		}
		prior, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[IdempotentAnswer])
		if err != nil {
			return false, prior, fmt.Errorf("claim idempotency key: %w", err)
		}
		return false, prior, nil
	case err != nil:
		return false, prior, fmt.Errorf("claim idempotency key: %w", err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout TO DEFAULT`); err != nil {
		return false, prior, fmt.Errorf("claim idempotency key: %w", err)
	}
	return true, prior, nil
}

// SaveIdempotentAnswer stores the answer to the request that claimed keyHash.
// conversationID (0 for none) is the conversation the answer is about: an
// erasure of its contact deletes the answer (store/erasure.go).
func SaveIdempotentAnswer(ctx context.Context, tx DBTX, keyHash []byte, status int, responseSealed []byte, conversationID int64) error {
	_, err := tx.Exec(ctx, `UPDATE idempotency_keys SET status = $2, response_sealed = $3, conversation_id = NULLIF($4, 0) WHERE key_hash = $1`,
		keyHash, status, responseSealed, conversationID)
	if err != nil {
		return fmt.Errorf("save idempotent answer: %w", err)
	}
	return nil
}

// DeleteExpiredIdempotencyKeys removes at most limit expired records and
// returns how many it removed.
func DeleteExpiredIdempotencyKeys(ctx context.Context, db DBTX, limit int) (int64, error) {
	tag, err := db.Exec(ctx, `
		DELETE FROM idempotency_keys WHERE key_hash IN (
			SELECT key_hash FROM idempotency_keys WHERE expires_at <= now() ORDER BY expires_at LIMIT $1)`, limit)
	if err != nil {
		return 0, fmt.Errorf("delete expired idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}
