package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

// TestBroadcastFinishesWhenEveryMessageIsSettled: a broadcast is finished,
// once, when each of its messages has a final status or was given up by
// reconciliation (no_final_status keeps its last status in the counts); a
// message still pending holds it open. A recipient given twice, in two
// batches, is written once.
func TestBroadcastFinishesWhenEveryMessageIsSettled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 0)
	ch, err := store.TenantChannelByAddress(ctx, tx, ten.ID, ten.WhatsApp)
	require.NoError(t, err)
	b, created, err := store.CreateBroadcast(ctx, tx, store.NewBroadcast{TenantID: ten.ID, ChannelID: ch.ID, ContentSID: "HXtest"})
	require.NoError(t, err)
	require.True(t, created)
	nums := []string{"whatsapp:" + testdb.PhoneNumber(), "whatsapp:" + testdb.PhoneNumber(), "whatsapp:" + testdb.PhoneNumber()}
	first, err := store.AddBroadcastRecipients(ctx, tx, b, nums)
	require.NoError(t, err)
	require.Len(t, first.MessageIDs, 3)
	again, err := store.AddBroadcastRecipients(ctx, tx, b, nums[:1])
	require.NoError(t, err)
	require.Empty(t, again.MessageIDs, "a recipient already written gets nothing more")
	_, err = store.MarkBroadcastQueued(ctx, tx, b.ID, 0)
	require.NoError(t, err)

	ids := first.MessageIDs
	_, err = tx.Exec(ctx, `UPDATE messages SET status = 'delivered' WHERE id = $1`, ids[0])
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `UPDATE messages SET status = 'sent', error_reason = $2 WHERE id = $1`, ids[1], store.ReasonNoFinalStatus)
	require.NoError(t, err)
	n, err := store.UnsettledBroadcastMessages(ctx, tx, ten.ID, b.ID)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the pending one")
	done, err := store.FinishBroadcast(ctx, tx, ten.ID, b.ID)
	require.NoError(t, err)
	require.False(t, done)

	_, err = store.MarkFailed(ctx, tx, ten.ID, ids[2], "63016", "test")
	require.NoError(t, err)
	done, err = store.FinishBroadcast(ctx, tx, ten.ID, b.ID)
	require.NoError(t, err)
	require.True(t, done)
	done, err = store.FinishBroadcast(ctx, tx, ten.ID, b.ID)
	require.NoError(t, err)
	require.False(t, done, "finished once")
	tally, err := store.TallyBroadcast(ctx, tx, b.ID)
	require.NoError(t, err)
	require.Equal(t, map[store.MessageStatus]int{store.StatusDelivered: 1, store.StatusSent: 1, store.StatusFailed: 1}, tally.Counts)
	require.Equal(t, 3, tally.Settled)

	_, err = store.UnsettledBroadcastMessages(ctx, tx, testdb.NewTenant(t, tx, 0).ID, b.ID)
	require.ErrorIs(t, err, store.ErrNotFound, "another tenant's broadcast")
}
