package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SetTranscript stores an inbound message's transcript (migration 0009). The
// first one written stays: a turn that raced another for the same voice note
// reports whether its own was the one kept. An erased message (erased_at,
// migration 0014) takes none: the turn transcribed it before the erasure.
func SetTranscript(ctx context.Context, db DBTX, tenantID string, messageID int64, transcript string) (bool, error) {
	tag, err := db.Exec(ctx, `
		UPDATE messages SET transcript = $3, updated_at = now()
		WHERE id = $1 AND tenant_id = $2 AND direction = 'inbound' AND transcript IS NULL AND erased_at IS NULL`,
		messageID, tenantID, transcript)
	if err != nil {
		return false, fmt.Errorf("set transcript: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// AccountCredentials are the Twilio account that owns a conversation's number,
// its auth token still sealed.
type AccountCredentials struct {
	AccountSID      string `db:"account_sid"`
	AuthTokenSealed []byte `db:"auth_token_enc"`
}

// ConversationAccount returns the credentials of the Twilio account that owns
// the conversation's number: what inbound media is fetched with.
func ConversationAccount(ctx context.Context, db DBTX, tenantID string, conversationID int64) (AccountCredentials, error) {
	rows, err := db.Query(ctx, `
		SELECT a.account_sid, a.auth_token_enc
		FROM conversations cv
		JOIN channels ch ON ch.id = cv.channel_id
		JOIN twilio_accounts a ON a.id = ch.account_id
		WHERE cv.id = $1 AND cv.tenant_id = $2`, conversationID, tenantID)
	if err != nil {
		return AccountCredentials{}, fmt.Errorf("conversation account: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[AccountCredentials])
	if err != nil {
		return AccountCredentials{}, fmt.Errorf("conversation account: %w", notFound(err))
	}
	return c, nil
}
