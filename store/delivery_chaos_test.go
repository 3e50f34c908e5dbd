package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

// Twilio's "queued" answer replaces the send's own "sending" claim. Found by
// the chaos run: when the server was down for the status callbacks, accepted
// replies stayed "sending" (with their SID) for good and looked stuck.
func TestMarkSentReplacesTheSendClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 10)
	ch, err := store.ChannelByAddress(ctx, tx, ten.WhatsApp)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, tx, store.Inbound{
		TenantID: ten.ID, ChannelID: ch.ID, From: "whatsapp:" + testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "hi",
	})
	require.NoError(t, err)
	id, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: "bot", Body: "hello", CreditsReserved: 1})
	require.NoError(t, err)

	claimed, err := store.ClaimSend(ctx, tx, ten.ID, id, 1)
	require.NoError(t, err)
	require.True(t, claimed)
	sid := "SM" + testdb.Unique() + testdb.Unique()
	ok, err := store.MarkSent(ctx, tx, ten.ID, id, sid, store.StatusQueued, "create")
	require.NoError(t, err)
	require.True(t, ok)

	m, err := store.GetMessage(ctx, tx, ten.ID, id)
	require.NoError(t, err)
	require.Equal(t, store.StatusQueued, m.Status)
	require.Equal(t, sid, *m.TwilioSID)

	// Later callbacks still only move forward; a late "queued" changes nothing.
	_, err = store.ApplyStatus(ctx, tx, store.StatusUpdate{TenantID: ten.ID, MessageID: id, MessageSID: sid, Status: store.StatusDelivered})
	require.NoError(t, err)
	_, err = store.ApplyStatus(ctx, tx, store.StatusUpdate{TenantID: ten.ID, MessageID: id, MessageSID: sid, Status: store.StatusQueued})
	require.NoError(t, err)
	m, err = store.GetMessage(ctx, tx, ten.ID, id)
	require.NoError(t, err)
	require.Equal(t, store.StatusDelivered, m.Status)
}
