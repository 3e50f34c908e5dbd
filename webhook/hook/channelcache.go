package hook

import (
	"context"
	"sync"
	"time"

	"github.com/conversa/conversa/store"
)

// Channel cache: the inbound webhook needs the channel a number belongs to
// and its account's auth token on every request. Looking both up (and
// decrypting the token) each time cost a round trip per webhook outside the
// group-committed transaction. Entries live channelTTL, so a number that is
// removed or moved stops being served within that time; a signature or
// account that does not match the cached entry is always checked again
// against the database, so a rotated auth token takes effect at once.
const (
	channelTTL     = 10 * time.Second
	maxCachedChans = 10_000
)

type cachedChannel struct {
	ch    store.Channel
	token string
	at    time.Time
}

type channelCache struct {
	mu  sync.RWMutex
	m   map[string]cachedChannel
	now func() time.Time
}

func newChannelCache(now func() time.Time) *channelCache {
	return &channelCache{m: map[string]cachedChannel{}, now: now}
}

// get returns a fresh entry for address.
func (c *channelCache) get(address string) (cachedChannel, bool) {
	c.mu.RLock()
	e, ok := c.m[address]
	c.mu.RUnlock()
	if !ok || c.now().Sub(e.at) >= channelTTL {
		return cachedChannel{}, false
	}
	return e, true
}

func (c *channelCache) put(address string, ch store.Channel, token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCachedChans {
		// Simple and bounded: start over rather than track recency.
		clear(c.m)
	}
	c.m[address] = cachedChannel{ch: ch, token: token, at: c.now()}
}

func (c *channelCache) forget(address string) {
	c.mu.Lock()
	delete(c.m, address)
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
	s.channels.put(address, ch, token)
	return ch, token, nil
}
