package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

// outbounds creates n bot messages of one conversation, committed, to debit for.
func outbounds(t *testing.T, ten testdb.Tenant, n int) []int64 {
	t.Helper()
	ctx := context.Background()
	pool := testdb.Pool(t)
	ch, err := store.ChannelByAddress(ctx, pool, ten.SMS)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, pool, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique(), Body: "hi"})
	require.NoError(t, err)
	ids := make([]int64, n)
	for i := range ids {
		ids[i], err = store.InsertOutbound(ctx, pool, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: "bot", Body: "x"})
		require.NoError(t, err)
	}
	return ids
}

// TestConcurrentDebitsSpendExactlyTheBalance races more debits than the
// balance pays for, each in its own transaction, as concurrent turns do:
// exactly as many succeed as the balance allows, whatever stripes they hit,
// and the balance ends at the remainder, equal to the ledger's sum.
func TestConcurrentDebitsSpendExactlyTheBalance(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		credits       int64
		price, debits int
		wantOK        int
		wantRemainder int64
	}{
		{"price 1", 25, 1, 40, 25, 0},
		{"price 3 gathers stripes", 50, 3, 30, 16, 2},
		{"plenty", 1000, 1, 40, 40, 960},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool := testdb.Pool(t)
			ten := testdb.NewTenant(t, pool, tc.credits)
			ids := outbounds(t, ten, tc.debits)

			var mu sync.Mutex
			ok, none := 0, 0
			var wg sync.WaitGroup
			for _, id := range ids {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tx, err := pool.Begin(ctx)
					if !assertNoError(t, err) {
						return
					}
					defer tx.Rollback(ctx) //nolint:errcheck
					_, err = store.DebitReply(ctx, tx, ten.ID, id, tc.price)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case errors.Is(err, store.ErrNoCredits):
						none++
					case assertNoError(t, err) && assertNoError(t, tx.Commit(ctx)):
						ok++
					}
				}()
			}
			wg.Wait()
			require.Equal(t, tc.wantOK, ok)
			require.Equal(t, tc.debits-tc.wantOK, none)

			got, err := store.GetTenant(ctx, pool, ten.ID)
			require.NoError(t, err)
			require.Equal(t, tc.wantRemainder, got.Credits)
			var ledger int64
			require.NoError(t, pool.QueryRow(ctx, `SELECT sum(amount)::bigint FROM credit_ledger WHERE tenant_id = $1`, ten.ID).Scan(&ledger))
			require.Equal(t, got.Credits, ledger, "the balance is the ledger's sum")
		})
	}
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestAddCreditsAndRefundMoveTheBalance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 0)
	bal, err := store.AddCredits(ctx, tx, ten.ID, 7)
	require.NoError(t, err)
	require.EqualValues(t, 7, bal)
	bal, err = store.AddCredits(ctx, tx, ten.ID, 100)
	require.NoError(t, err)
	require.EqualValues(t, 107, bal)
	_, err = store.AddCredits(ctx, testdb.Pool(t), "00000000-0000-0000-0000-000000000000", 5)
	require.ErrorIs(t, err, store.ErrNotFound)

	ch, err := store.ChannelByAddress(ctx, tx, ten.SMS)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique(), Body: "hi"})
	require.NoError(t, err)
	id, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: "bot", Body: "x", CreditsReserved: 4})
	require.NoError(t, err)
	bal, err = store.DebitReply(ctx, tx, ten.ID, id, 4)
	require.NoError(t, err)
	require.EqualValues(t, 103, bal)
	n, err := store.Refund(ctx, tx, ten.ID, id)
	require.NoError(t, err)
	require.EqualValues(t, 4, n)
	got, err := store.GetTenant(ctx, tx, ten.ID)
	require.NoError(t, err)
	require.EqualValues(t, 107, got.Credits)
}

// TestRepliedEventFollowsTheDebitOnEveryPath: the turn.replied event is
// written once, after the debit, whether the debit took a free stripe or had
// to gather the balance (5 credits spread one per stripe, price 5).
func TestRepliedEventFollowsTheDebitOnEveryPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		credits int64
		price   int
		balance int64
	}{
		{"free stripe", 100, 1, 99},
		{"gathered", 5, 5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			tx := testdb.Tx(t)
			ten := testdb.NewTenant(t, tx, tc.credits)
			ch, err := store.ChannelByAddress(ctx, tx, ten.SMS)
			require.NoError(t, err)
			in, err := store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: testdb.PhoneNumber(), MessageSID: "SM" + testdb.Unique(), Body: "hi"})
			require.NoError(t, err)
			reply := in.MessageID
			id, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID, Author: "bot", Body: "x", ReplyToID: &reply})
			require.NoError(t, err)

			res, err := store.CommitTurn(ctx, tx, store.TurnCommit{
				TenantID: ten.ID, ConversationID: in.ConversationID, InboundID: in.MessageID, ReplyID: id,
				Price: tc.price, Events: []store.Event{{Kind: "turn.llm"}},
			})
			require.NoError(t, err)
			require.Equal(t, tc.balance, res.Balance)

			rows, err := tx.Query(ctx, `SELECT kind, detail FROM message_events WHERE message_id = $1 ORDER BY id`, in.MessageID)
			require.NoError(t, err)
			type ev struct {
				Kind   string
				Detail map[string]any
			}
			evs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ev])
			require.NoError(t, err)
			require.Len(t, evs, 3) // webhook.received, turn.llm, turn.replied
			require.Equal(t, "turn.llm", evs[1].Kind)
			require.Equal(t, "turn.replied", evs[2].Kind)
			require.EqualValues(t, tc.balance, evs[2].Detail["credits_balance"])
			require.EqualValues(t, id, evs[2].Detail["reply_message_id"])
		})
	}
}
