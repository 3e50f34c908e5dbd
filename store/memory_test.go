package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

// conversation stores n inbound messages in one new conversation.
func conversation(t *testing.T, tx pgx.Tx, n int) (testdb.Tenant, store.InboundResult) {
	t.Helper()
	ctx := context.Background()
	ten := testdb.NewTenant(t, tx, 5)
	ch, err := store.ChannelByAddress(ctx, tx, ten.SMS)
	require.NoError(t, err)
	from := testdb.PhoneNumber()
	var res store.InboundResult
	for i := 0; i < n; i++ {
		res, err = store.InsertInbound(ctx, tx, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: from,
			MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "m"})
		require.NoError(t, err)
	}
	return ten, res
}

func memory(t *testing.T, rdb *redis.Client) *store.Memory {
	t.Helper()
	m := store.NewMemory(rdb, "conversa:test:"+testdb.Unique()+":", 3)
	m.TTL = time.Minute
	m.Settle = 0
	return m
}

func TestMemoryRebuildsRedisFromPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten, last := conversation(t, tx, 4)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	t.Cleanup(func() { _ = rdb.Close() })
	mem := memory(t, rdb)

	turns, source, err := mem.Recent(ctx, tx, ten.ID, last.ConversationID, 0)
	require.NoError(t, err)
	require.Equal(t, "postgres", source)
	require.Len(t, turns, 3, "the window")
	require.Equal(t, last.MessageID, turns[2].ID)

	_, err = store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: last.ConversationID, Author: "human", Body: "a person"})
	require.NoError(t, err)
	turns, source, err = mem.Recent(ctx, tx, ten.ID, last.ConversationID, 0)
	require.NoError(t, err)
	require.Equal(t, "redis", source)
	require.Len(t, turns, 3)
	require.EqualValues(t, "human", turns[2].Author, "messages after the cache come from Postgres")

	// Past the summary's end, cached turns are not returned again.
	turns, _, err = mem.Recent(ctx, tx, ten.ID, last.ConversationID, turns[1].ID)
	require.NoError(t, err)
	require.Len(t, turns, 1)

	// Redis lost: the next read rebuilds from Postgres.
	keys, err := rdb.Keys(ctx, mem.Prefix+"*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	require.NoError(t, rdb.Del(ctx, keys...).Err())
	_, source, err = mem.Recent(ctx, tx, ten.ID, last.ConversationID, 0)
	require.NoError(t, err)
	require.Equal(t, "postgres", source)
}

func TestMemoryCachesOnlySettledTurns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten, last := conversation(t, tx, 2)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	t.Cleanup(func() { _ = rdb.Close() })
	mem := memory(t, rdb)
	mem.Settle = time.Hour // every message is too fresh to cache

	for range 2 {
		turns, source, err := mem.Recent(ctx, tx, ten.ID, last.ConversationID, 0)
		require.NoError(t, err)
		require.Equal(t, "postgres", source)
		require.Len(t, turns, 2)
	}
}

func TestMemoryWithoutRedis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten, last := conversation(t, tx, 2)
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = dead.Close() })

	turns, source, err := memory(t, dead).Recent(ctx, tx, ten.ID, last.ConversationID, 0)
	require.NoError(t, err)
	require.Equal(t, "postgres (redis unavailable)", source)
	require.Len(t, turns, 2)
	turns, source, err = memory(t, nil).Recent(ctx, tx, ten.ID, last.ConversationID, 0)
	require.NoError(t, err)
	require.Equal(t, "postgres (no redis)", source)
	require.Len(t, turns, 2)
}

func TestDebitReplyNeverGoesBelowZero(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten, last := conversation(t, tx, 1)
	reply := last.MessageID
	id, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: last.ConversationID, Author: "bot", Body: "x", ReplyToID: &reply})
	require.NoError(t, err)

	_, err = store.DebitReply(ctx, tx, ten.ID, id, 6)
	require.ErrorIs(t, err, store.ErrNoCredits)
	balance, err := store.DebitReply(ctx, tx, ten.ID, id, 5)
	require.NoError(t, err)
	require.Zero(t, balance)
}
