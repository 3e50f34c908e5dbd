package store

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
)

// SigningOverlap is how long a rotated-out signing secret stays valid.
const SigningOverlap = 24 * time.Hour

// newSigningSecret returns a fresh signing secret's text.
func newSigningSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new signing secret: %w", err)
	}
	return "cvs_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// SigningSecrets returns the tenant's valid signing secrets, newest first:
// the current one, and the previous one while its 24 h overlap lasts. A
// tenant created before signing secrets existed gets one on first use.
func SigningSecrets(ctx context.Context, db DBTX, sealer *Sealer, tenantID string) ([]string, error) {
	var cur, prev []byte
	var prevValid bool
	err := db.QueryRow(ctx, `
		SELECT signing_secret_enc, signing_secret_prev_enc, COALESCE(signing_secret_prev_until > now(), false)
		FROM tenants WHERE id = $1`, tenantID).Scan(&cur, &prev, &prevValid)
	if err != nil {
		return nil, fmt.Errorf("signing secrets: %w", notFound(err))
	}
	return openSigningSecrets(ctx, db, sealer, tenantID, cur, prev, prevValid)
}

// openSigningSecrets opens a tenant's sealed secrets as SigningSecrets
// returns them (the current one, and the previous one while prevValid),
// giving the tenant its first secret when it has none (cur nil).
func openSigningSecrets(ctx context.Context, db DBTX, sealer *Sealer, tenantID string, cur, prev []byte, prevValid bool) ([]string, error) {
	if cur == nil {
		s, err := ensureSigningSecret(ctx, db, sealer, tenantID)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
	secrets := make([]string, 0, 2)
	for _, sealed := range [][]byte{cur, prev} {
		if sealed == nil || (len(secrets) == 1 && !prevValid) {
			continue
		}
		s, err := sealer.Open(sealed)
		if err != nil {
			return nil, fmt.Errorf("signing secrets: %w", err)
		}
		secrets = append(secrets, s)
	}
	return secrets, nil
}

// ensureSigningSecret gives a tenant that has none its first secret (a race
// of two first uses keeps the first writer's) and returns the current one.
func ensureSigningSecret(ctx context.Context, db DBTX, sealer *Sealer, tenantID string) (string, error) {
	s, err := newSigningSecret()
	if err != nil {
		return "", err
	}
	sealed, err := sealer.Seal(s)
	if err != nil {
		return "", err
	}
	var cur []byte
	err = db.QueryRow(ctx, `
		UPDATE tenants SET signing_secret_enc = COALESCE(signing_secret_enc, $2)
		WHERE id = $1 RETURNING signing_secret_enc`, tenantID, sealed).Scan(&cur)
	if err != nil {
		return "", fmt.Errorf("signing secret: %w", notFound(err))
	}
	return sealer.Open(cur)
}

// RotateSigningSecret issues a new signing secret, returned this once; the
// one it replaces stays valid for SigningOverlap. It answers when that is.
func RotateSigningSecret(ctx context.Context, db DBTX, sealer *Sealer, tenantID string) (string, time.Time, error) {
	if sealer == nil {
		return "", time.Time{}, errors.New("rotate signing secret: no sealer")
	}
	s, err := newSigningSecret()
	if err != nil {
		return "", time.Time{}, err
	}
	sealed, err := sealer.Seal(s)
	if err != nil {
		return "", time.Time{}, err
	}
	var until time.Time
	err = db.QueryRow(ctx, `
		UPDATE tenants SET signing_secret_prev_enc = signing_secret_enc,
			signing_secret_prev_until = now() + make_interval(secs => $3),
			signing_secret_enc = $2
		WHERE id = $1 RETURNING signing_secret_prev_until`,
		tenantID, sealed, SigningOverlap.Seconds()).Scan(&until)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("rotate signing secret: %w", notFound(err))
	}
	return s, until, nil
}
