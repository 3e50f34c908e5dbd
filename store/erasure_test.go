package store_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

// TestErasureKeepsARacingTurnOutOfRedis: a turn that read the conversation
// from Postgres just before the erasure committed cannot cache those words
// afterwards; once the marker is gone, memory caches again (what it caches
// then is erased already).
func TestErasureKeepsARacingTurnOutOfRedis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	t.Cleanup(func() { _ = rdb.Close() })
	mem := memory(t, rdb)
	ten, res := conversation(t, tx, 2)
	var address string
	require.NoError(t, tx.QueryRow(ctx, `SELECT address FROM contacts WHERE id = $1`, res.ContactID).Scan(&address))

	racing, err := tx.Begin(ctx) // what the racing turn read: the words, before the erasure
	require.NoError(t, err)
	_, _, err = mem.Recent(ctx, racing, ten.ID, res.ConversationID, 0)
	require.NoError(t, err)
	key := mem.Prefix + "mem:v2:" + ten.ID + ":" + itoa(res.ConversationID)
	require.Contains(t, rdb.Get(ctx, key).Val(), `"b":"m"`)
	require.NoError(t, racing.Rollback(ctx))

	erased, err := store.EraseContacts(ctx, tx, mem, ten.ID, []string{address})
	require.NoError(t, err)
	require.Len(t, erased, 1)
	require.Equal(t, "erased", rdb.Get(ctx, key).Val())

	// The racing turn's cache write after the erasure: refused.
	snapshot := store.NewMemory(rdb, mem.Prefix, 3)
	snapshot.Settle = 0
	_, _, err = snapshot.Recent(ctx, tx, ten.ID, res.ConversationID, 0)
	require.NoError(t, err)
	require.Equal(t, "erased", rdb.Get(ctx, key).Val(), "nothing is cached over an erased conversation's marker")
	require.Positive(t, rdb.PTTL(ctx, key).Val())
	require.LessOrEqual(t, rdb.PTTL(ctx, key).Val(), time.Minute)
}

// TestErasureRefusesWhenRedisIsDown: with Redis configured and not
// answering, the erasure says so instead of leaving memory behind.
func TestErasureRefusesWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = down.Close() })
	ten, res := conversation(t, tx, 1)
	var address string
	require.NoError(t, tx.QueryRow(ctx, `SELECT address FROM contacts WHERE id = $1`, res.ContactID).Scan(&address))
	_, err := store.EraseContacts(ctx, tx, memory(t, down), ten.ID, []string{address})
	require.ErrorIs(t, err, store.ErrMemoryUnavailable)
}

// TestErasureAddresses: a bare number is the person on every channel.
func TestErasureAddresses(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][]string{
		"+15551234567":          {"+15551234567", "whatsapp:+15551234567"},
		"whatsapp:+15551234567": {"whatsapp:+15551234567"},
		"15551234567":           nil,
		"+1555 123":             nil,
		"+":                     nil,
		"whatsapp:":             nil,
		"whatsapp:+1 5":         nil,
		"":                      nil,
		"+1234567890123456":     nil,
	} {
		got, ok := store.ErasureAddresses(in)
		require.Equal(t, want != nil, ok, in)
		require.Equal(t, want, got, in)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
