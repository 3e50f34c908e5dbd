package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

// seedContact writes n inbound messages (with one trace event each) and n
// pending-free outbound ones from one contact, inside tx.
func seedContact(b *testing.B, n int) (testdb.Tenant, string, func() store.DBTX) {
	b.Helper()
	ctx := context.Background()
	tx := testdb.Tx(b)
	ten := testdb.NewTenant(b, tx, 0)
	ch, err := store.ChannelByAddress(ctx, tx, ten.WhatsApp)
	require.NoError(b, err)
	from := "whatsapp:" + testdb.PhoneNumber()
	var conv int64
	for i := 0; i < n; i++ {
		res, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: from, ProfileName: "Ana",
			MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "a message of some length from the customer",
			Event: map[string]any{"channel": "whatsapp"}})
		require.NoError(b, err)
		conv = res.ConversationID
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO messages (tenant_id, conversation_id, direction, author, body, status)
		SELECT $1, $2, 'outbound', 'bot', 'a reply of some length from the bot', 'delivered' FROM generate_series(1, $3)`, ten.ID, conv, n)
	require.NoError(b, err)
	return ten, from, func() store.DBTX { return tx }
}

// BenchmarkEraseContact erases one contact with 1,000 inbound and 1,000
// outbound messages in one transaction (Redis off: Postgres only). Run it
// with -benchtime 1x: every iteration's seed stays in an open test
// transaction until the end, so later iterations measure a bloated table.
func BenchmarkEraseContact(b *testing.B) {
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ten, from, db := seedContact(b, 1000)
		tx := db()
		b.StartTimer()
		_, err := store.EraseContacts(ctx, tx, nil, ten.ID, []string{from})
		require.NoError(b, err)
	}
	b.ReportMetric(2000, "messages/op")
}

// BenchmarkRetentionBatch erases 2,000 expired messages in batches of 500.
func BenchmarkRetentionBatch(b *testing.B) {
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ten, _, db := seedContact(b, 1000)
		tx := db()
		_, err := tx.Exec(ctx, `UPDATE messages SET created_at = now() - interval '40 days' WHERE tenant_id = $1`, ten.ID)
		require.NoError(b, err)
		b.StartTimer()
		for {
			batch, err := store.EraseExpiredMessages(ctx, tx, nil, ten.ID, 30, 500)
			require.NoError(b, err)
			if batch.Messages < 500 {
				break
			}
		}
	}
	b.ReportMetric(2000, "messages/op")
}
