package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

func TestStatusMoves(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cur, next string
		moves     bool
	}{
		{"pending", "sending", true},
		{"sending", "queued", false},
		{"sending", "sent", true},
		{"sent", "delivered", true},
		{"delivered", "sent", false},
		{"delivered", "read", true},
		{"read", "delivered", false},
		{"sent", "failed", true},
		{"sent", "undelivered", true},
		{"delivered", "undelivered", false},
		{"failed", "delivered", false},
		{"undelivered", "failed", false},
		{"sent", "canceled", true},
		{"sent", "receiving", false},
		{"sent", "sent", false},
	} {
		require.Equal(t, tc.moves, store.StatusMoves(tc.cur, tc.next), "%s -> %s", tc.cur, tc.next)
	}
}

func TestMarkFailedRefundsOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 10)
	ch, err := store.ChannelByAddress(ctx, tx, ten.SMS)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique(), Body: "hi"})
	require.NoError(t, err)
	id, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: "bot", Body: "x", CreditsReserved: 2})
	require.NoError(t, err)

	ok, err := store.MarkFailed(ctx, tx, ten.ID, id, "21211", "invalid_to")
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = store.MarkFailed(ctx, tx, ten.ID, id, "21211", "invalid_to")
	require.NoError(t, err)
	require.False(t, ok, "already failed")
	n, err := store.Refund(ctx, tx, ten.ID, id)
	require.NoError(t, err)
	require.Zero(t, n, "refunded once only")

	got, err := store.GetTenant(ctx, tx, ten.ID)
	require.NoError(t, err)
	require.Equal(t, int64(12), got.Credits)
	var refunds int
	require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM credit_ledger WHERE message_id = $1 AND reason = 'refund'`, id).Scan(&refunds))
	require.Equal(t, 1, refunds)
}
