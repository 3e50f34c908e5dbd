package hook

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

// statusEdge is a server with what status callbacks' transactions need.
func statusEdge(t *testing.T) (*Server, *pgxpool.Pool) {
	t.Helper()
	pool := testdb.Pool(t)
	s := New(Deps{DB: pool, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return s, pool
}

// acceptedReply writes an outbound reply of ten (one credit reserved) that
// Twilio accepted, and returns it as a status callback finds it.
func acceptedReply(t *testing.T, pool *pgxpool.Pool, ten testdb.Tenant) store.CallbackTarget {
	t.Helper()
	ctx := context.Background()
	ch, err := store.ChannelByAddress(ctx, pool, ten.SMS)
	require.NoError(t, err)
	in, err := store.InsertInbound(ctx, pool, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: testdb.PhoneNumber(),
		MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "hi"})
	require.NoError(t, err)
	id, err := store.InsertOutbound(ctx, pool, store.Outbound{TenantID: ten.ID, ConversationID: in.ConversationID,
		Author: "bot", Body: "hello", CreditsReserved: 1})
	require.NoError(t, err)
	_, err = store.ClaimSend(ctx, pool, ten.ID, id, 1)
	require.NoError(t, err)
	sid := "SM" + testdb.Unique() + testdb.Unique()
	_, err = store.MarkSent(ctx, pool, ten.ID, id, sid, store.StatusQueued, "create")
	require.NoError(t, err)
	target, err := store.CallbackTargetByID(ctx, pool, id, sid)
	require.NoError(t, err)
	return target
}

// callbackFor is a status callback about target.
func callbackFor(target store.CallbackTarget, status string) statusCallback {
	return statusCallback{target: target, sid: *target.TwilioSID, status: status}
}

// badCallback cannot be applied: its tenant id is not a uuid, so Postgres
// fails the statement (and with it the transaction) after the callback's
// dedupe row was written.
func badCallback(target store.CallbackTarget) statusCallback {
	target.TenantID = "not-a-tenant"
	return statusCallback{target: target, sid: "SM" + testdb.Unique() + testdb.Unique(), status: "delivered"}
}

// requireStatus checks a message's status and its recorded callbacks.
func requireStatus(t *testing.T, pool *pgxpool.Pool, target store.CallbackTarget, status store.MessageStatus, callbacks int) {
	t.Helper()
	var got store.MessageStatus
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `
		SELECT status, (SELECT count(*) FROM status_callbacks WHERE message_sid = $2) FROM messages WHERE id = $1`,
		target.MessageID, *target.TwilioSID).Scan(&got, &n))
	require.Equal(t, status, got, target.MessageID)
	require.Equal(t, callbacks, n, target.MessageID)
}

// requireNotRecorded checks that nothing of a failed callback was kept.
func requireNotRecorded(t *testing.T, pool *pgxpool.Pool, cb statusCallback) {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM status_callbacks WHERE message_sid = $1`, cb.sid).Scan(&n))
	require.Zero(t, n, "the failed callback's dedupe row was rolled back, so Twilio's retry is not a duplicate")
}

// credits is a tenant's balance.
func credits(t *testing.T, pool *pgxpool.Pool, ten testdb.Tenant) int64 {
	t.Helper()
	var n int64
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT COALESCE(sum(credits), 0)::bigint FROM credit_stripes WHERE tenant_id = $1`, ten.ID).Scan(&n))
	return n
}

// TestStatusGroupCommitIsolatesABadCallback sends a burst of concurrent
// status callbacks, one of which cannot be applied: every good one is
// applied, only the bad one fails.
func TestStatusGroupCommitIsolatesABadCallback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := statusEdge(t)
	ten := testdb.NewTenant(t, pool, 50)
	targets := make([]store.CallbackTarget, 20)
	for i := range targets {
		targets[i] = acceptedReply(t, pool, ten)
	}
	var cbs []statusCallback
	for _, target := range targets {
		cbs = append(cbs, callbackFor(target, "sent"), callbackFor(target, "delivered"))
	}
	const bad = 7
	cbs = slices.Insert(cbs, bad, badCallback(targets[3]))

	errs := make([]error, len(cbs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, cb := range cbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = s.group.applyStatus(ctx, cb)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if i == bad {
			require.Error(t, err)
		} else {
			require.NoError(t, err, i)
		}
	}
	for _, target := range targets {
		requireStatus(t, pool, target, store.StatusDelivered, 2)
	}
	requireNotRecorded(t, pool, cbs[bad])
}

// TestStatusBatchWithABadCallbackCommitsTheOthers commits one batch that
// holds a bad callback between good ones: the batch's transaction fails, and
// every other callback still ends applied, with its own outcome.
func TestStatusBatchWithABadCallbackCommitsTheOthers(t *testing.T) {
	t.Parallel()
	s, pool := statusEdge(t)
	ten := testdb.NewTenant(t, pool, 10)
	a, b := acceptedReply(t, pool, ten), acceptedReply(t, pool, ten)
	bad := badCallback(a)
	batch := &batch[statusCallback, statusResult]{items: []statusCallback{
		callbackFor(b, "delivered"), callbackFor(a, "sent"), bad, callbackFor(b, "sent"), callbackFor(a, "sent"),
	}}
	batch.flush(context.Background(), s.commitStatuses, s.Logger)

	want := []statusResult{{applied: true}, {applied: true}, {}, {}, {duplicate: true}}
	for i, r := range batch.results {
		if i == 2 {
			require.Error(t, r.err)
			continue
		}
		require.NoError(t, r.err, i)
		require.Equal(t, want[i], r.out, i)
	}
	requireStatus(t, pool, a, store.StatusSent, 1)
	requireStatus(t, pool, b, store.StatusDelivered, 2)
	requireNotRecorded(t, pool, bad)
}

// TestStatusBatchDedupesInsideTheBatch commits callbacks of several messages
// in one transaction, given in descending message order and with a copy of
// one callback: each keeps its own outcome, in the order given, and the copy
// is a duplicate exactly as if it had come in a later transaction.
func TestStatusBatchDedupesInsideTheBatch(t *testing.T) {
	t.Parallel()
	s, pool := statusEdge(t)
	ten := testdb.NewTenant(t, pool, 10)
	a, b := acceptedReply(t, pool, ten), acceptedReply(t, pool, ten)
	require.Less(t, a.MessageID, b.MessageID)
	failed := callbackFor(a, "failed")
	failed.errorCode = "30008"

	results, err := s.commitStatuses(context.Background(), []statusCallback{
		callbackFor(b, "delivered"), failed, callbackFor(b, "sent"), callbackFor(b, "delivered"), failed,
	})
	require.NoError(t, err)
	require.Equal(t, []statusResult{
		{applied: true},   // b delivered
		{applied: true},   // a failed
		{},                // b sent: recorded, but delivered came first
		{duplicate: true}, // b delivered again
		{duplicate: true}, // a failed again: refunds nothing more
	}, results)
	requireStatus(t, pool, a, store.StatusFailed, 1)
	requireStatus(t, pool, b, store.StatusDelivered, 2)
	require.Equal(t, int64(10+1), credits(t, pool, ten), "the failed reply's credit is refunded once")
}

// TestStatusBatchesInOppositeOrdersBothCommit commits, at the same time, two
// batches that carry the same callbacks of the same messages in opposite
// orders, as redeliveries racing their originals do: both commit, and each
// callback is applied by exactly one of them.
func TestStatusBatchesInOppositeOrdersBothCommit(t *testing.T) {
	t.Parallel()
	s, pool := statusEdge(t)
	ten := testdb.NewTenant(t, pool, 10)
	for range 5 {
		a, b := acceptedReply(t, pool, ten), acceptedReply(t, pool, ten)
		forward := []statusCallback{callbackFor(a, "sent"), callbackFor(a, "delivered"), callbackFor(b, "sent"), callbackFor(b, "delivered")}
		backward := slices.Clone(forward)
		slices.Reverse(backward)

		var results [2][]statusResult
		var errs [2]error
		var wg sync.WaitGroup
		for i, cbs := range [][]statusCallback{forward, backward} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = s.commitStatuses(context.Background(), cbs)
			}()
		}
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		for i := range forward {
			first, second := results[0][i], results[1][len(forward)-1-i]
			require.True(t, first.duplicate != second.duplicate, "callback %d recorded by exactly one batch", i)
		}
		requireStatus(t, pool, a, store.StatusDelivered, 2)
		requireStatus(t, pool, b, store.StatusDelivered, 2)
	}
}

// TestStatusBatchOutlivesAnErasedMessage: a callback about a message erased
// after its (cached) look-up is refused alone; the callbacks it shares a
// transaction with are applied.
func TestStatusBatchOutlivesAnErasedMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := statusEdge(t)
	ten := testdb.NewTenant(t, pool, 5)
	erased, kept := acceptedReply(t, pool, ten), acceptedReply(t, pool, ten)
	_, err := pool.Exec(ctx, `DELETE FROM messages WHERE id = $1`, erased.MessageID)
	require.NoError(t, err)
	// delivered goes the quick way, failed the transaction's: both meet the
	// erased message.
	for _, status := range []string{"delivered", "failed"} {
		results, err := s.commitStatuses(ctx, []statusCallback{callbackFor(erased, status), callbackFor(kept, status)})
		require.NoError(t, err, status)
		require.Equal(t, []statusResult{{gone: true}, {applied: status == "delivered"}}, results, status)
	}
	m, err := store.GetMessage(ctx, pool, ten.ID, kept.MessageID)
	require.NoError(t, err)
	require.Equal(t, store.StatusDelivered, m.Status, "a failure never overwrites delivered")
}
