package hook

import (
	"context"
	"sync"
	"time"

	"github.com/conversa/conversa/store"
)

// Look-up caches: the inbound webhook needs the channel a number belongs to
// and its account's auth token on every request, and a status callback the
// message it is about with the same token. Looking them up (and decrypting
// the token) each time cost a round trip per webhook outside the
// group-committed transaction; a reply's three callbacks (queued, sent,
// delivered) come within seconds. Entries live cacheTTL, so a number that
// is removed or moved, or a message that is erased, stops being served
// from the cache within that time; a signature or account that does not
// match the cached entry is always checked again against the database, so
// a rotated auth token takes effect at once.
const (
	cacheTTL       = 10 * time.Second
	maxCachedItems = 10_000
)

// cachedChannel is a channel with its account's opened auth token.
type cachedChannel struct {
	ch    store.Channel
	token string
}

// cachedTarget is a status callback's message with its account's opened
// auth token.
type cachedTarget struct {
	target store.CallbackTarget
	token  string
}

// ttlCache holds values for cacheTTL, at most maxCachedItems of them.
type ttlCache[K comparable, V any] struct {
	mu  sync.RWMutex
	m   map[K]ttlEntry[V]
	now func() time.Time
}

type ttlEntry[V any] struct {
	v  V
	at time.Time
}

func newTTLCache[K comparable, V any](now func() time.Time) *ttlCache[K, V] {
	return &ttlCache[K, V]{m: map[K]ttlEntry[V]{}, now: now}
}

// get returns a fresh entry for k.
func (c *ttlCache[K, V]) get(k K) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || c.now().Sub(e.at) >= cacheTTL {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[K, V]) put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCachedItems {
		// Simple and bounded: start over rather than track recency.
		clear(c.m)
	}
	c.m[k] = ttlEntry[V]{v: v, at: c.now()}
}

func (c *ttlCache[K, V]) forget(k K) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

// lookupChannel loads a channel and opens its account's auth token.
func (s *Server) lookupChannel(ctx context.Context, address string) (store.Channel, string, error) {
	ch, err := store.ChannelByAddress(ctx, s.DB, address)
	if err != nil {
		return ch, "", err
	}
	token, err := s.Sealer.Open(ch.AuthTokenSealed)
	if err != nil {
		return ch, "", err
	}
	s.channels.put(address, cachedChannel{ch: ch, token: token})
	return ch, token, nil
}
