package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Conversation is one open (or closed) thread between a contact and a number.
type Conversation struct {
	ID                   int64              `db:"id" json:"id"`
	TenantID             string             `db:"tenant_id" json:"tenant_id"`
	ChannelID            int64              `db:"channel_id" json:"channel_id"`
	ContactID            int64              `db:"contact_id" json:"contact_id"`
	Status               ConversationStatus `db:"status" json:"status"`
	Version              int64              `db:"version" json:"version"`
	LastInboundAt        *time.Time         `db:"last_inbound_at" json:"last_inbound_at"`
	LastInboundMessageID *int64             `db:"last_inbound_message_id" json:"last_inbound_message_id"`
	CreatedAt            time.Time          `db:"created_at" json:"created_at"`
	UpdatedAt            time.Time          `db:"updated_at" json:"updated_at"`
}

// ConversationColumns is the explicit column list a Conversation scans from.
const ConversationColumns = `id, tenant_id, channel_id, contact_id, status, version,
	last_inbound_at, last_inbound_message_id, created_at, updated_at`

// GetConversation returns one conversation of one tenant.
func GetConversation(ctx context.Context, db DBTX, tenantID string, id int64) (Conversation, error) {
	rows, err := db.Query(ctx, `SELECT `+ConversationColumns+` FROM conversations WHERE id = $1 AND tenant_id = $2`, id, tenantID)
	if err != nil {
		return Conversation{}, fmt.Errorf("get conversation: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Conversation])
	if err != nil {
		return Conversation{}, notFound(err)
	}
	return c, nil
}

// SetConversationStatus hands a conversation to a person (ConversationHuman),
// back to the bot (ConversationBot), or closes it, bumping its version. Messages that arrive
// while it is "human" are marked during_handoff at ingest and never answered
// by the bot. reason is the handoff's reason code (conversation.handoff's
// reason: HandoffByOperator, HandoffByAgent, HandoffGaveUp).
func SetConversationStatus(ctx context.Context, db DBTX, tenantID string, id int64, status ConversationStatus, reason string) (Conversation, error) {
	if !status.Valid() {
		return Conversation{}, fmt.Errorf("set conversation status: %q is not bot, human or closed", status)
	}
	rows, err := db.Query(ctx, `
		UPDATE conversations SET status = $3, handoff_reason = NULLIF($4, ''), version = version + 1, updated_at = now()
		WHERE id = $1 AND tenant_id = $2
		RETURNING `+ConversationColumns, id, tenantID, status, reason)
	if err != nil {
		return Conversation{}, fmt.Errorf("set conversation status: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Conversation])
	if err != nil {
		return Conversation{}, notFound(err)
	}
	return c, nil
}

// WhatsAppWindow is how long after the contact's last message WhatsApp
// allows free text; past it only a template (ContentSid) may be sent.
const WhatsAppWindow = 24 * time.Hour

// FreeTextAllowed reports whether free text may be sent now on a channel of
// kind whose contact last wrote at lastInboundAt (nil: never): always on SMS,
// within WhatsAppWindow on WhatsApp.
func FreeTextAllowed(kind ChannelKind, lastInboundAt *time.Time, now time.Time) bool {
	return kind != ChannelWhatsApp || (lastInboundAt != nil && now.Sub(*lastInboundAt) < WhatsAppWindow)
}
