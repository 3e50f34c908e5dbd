package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// MemoryTurn is one message of a conversation as memory keeps it.
type MemoryTurn struct {
	ID int64 `db:"id" json:"id"`
	// Author is contact, bot or human.
	Author        Author `db:"author" json:"a"`
	Body          string `db:"body" json:"b"`
	DuringHandoff bool   `db:"during_handoff" json:"h,omitempty"`
	// Media and Transcript are an inbound message's attachments and its
	// voice notes' transcript (agents.MessageText renders them).
	Media      []Media `db:"media" json:"md,omitempty"`
	Transcript *string `db:"transcript" json:"t,omitempty"`
	// Settled is true once the message is old enough that every message with
	// a smaller id has committed too: only settled turns are cached.
	Settled bool `db:"settled" json:"-"`
}

// Memory is the hybrid conversation memory: the recent turns of each
// conversation cached in Redis, Postgres (the messages table) the truth.
//
// Every writer (webhook, turn, operator) only writes Postgres. A read takes
// the cached turns from Redis and asks Postgres only for the messages after
// the newest cached one; a miss, or a Redis that is down or slow, reads the
// whole window from Postgres and rebuilds the cache. Only settled turns
// (older than Settle) are cached: message ids are drawn before commit, so a
// fresh id may still be missing a smaller one from a transaction that has
// not committed yet, and caching past it would lose that message.
type Memory struct {
	// Redis may be nil: memory then works from Postgres alone.
	Redis *redis.Client
	// Prefix namespaces the keys (parallel test binaries share one Redis).
	Prefix string
	// Window is how many recent turns are kept and returned.
	Window int
	// Timeout bounds each Redis call; past it Postgres answers.
	Timeout time.Duration
	// TTL of a cached conversation.
	TTL time.Duration
	// Settle is how old a message must be before it is cached.
	Settle time.Duration
}

// NewMemory returns a Memory with the defaults: a window of window turns,
// 150 ms Redis timeout, 24 h TTL, 10 s settle.
func NewMemory(rdb *redis.Client, prefix string, window int) *Memory {
	return &Memory{Redis: rdb, Prefix: prefix, Window: window, Timeout: 150 * time.Millisecond, TTL: 24 * time.Hour, Settle: 10 * time.Second}
}

type cachedTurns struct {
	Through int64        `json:"through"`
	Turns   []MemoryTurn `json:"turns"`
}

func (m *Memory) key(tenantID string, conversationID int64) string {
	// v2: turns carry their media and transcript.
	return m.Prefix + "mem:v2:" + tenantID + ":" + strconv.FormatInt(conversationID, 10)
}

// Recent returns the conversation's last Window turns after afterID,
// oldest first, and where they came from: "redis" (cache plus the newer
// messages from Postgres), "postgres" (a miss, cache rebuilt), "postgres
// (no redis)" or "postgres (redis unavailable)". It is a MemoryRead in one
// go.
func (m *Memory) Recent(ctx context.Context, db DBTX, tenantID string, conversationID, afterID int64) ([]MemoryTurn, string, error) {
	r := m.StartRead(ctx, tenantID, conversationID, afterID)
	b := &pgx.Batch{}
	r.Queue(b)
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		return nil, r.source(), err
	}
	turns, source := r.Turns(ctx, afterID)
	return turns, source, nil
}

// MemoryRead is one read of a conversation's recent turns in three steps,
// so that its Postgres part can ride in a round trip the caller makes
// anyway (the turn's first read: store.GetTurnInputs): StartRead asks
// Redis, Queue adds the Postgres read to a batch, Turns puts the two
// together and refreshes the cache.
type MemoryRead struct {
	m              *Memory
	key            string
	conversationID int64
	tenantID       string
	afterID        int64
	cached         cachedTurns
	hit            bool
	redisErr       error
	fresh          []MemoryTurn
}

// StartRead takes the cached turns of a conversation from Redis; the
// Postgres part reads the turns after afterID the cache does not have. A
// caller that learns the summary's end only from Queue's batch passes 0
// and gives it to Turns: the last Window turns after it are the last Window
// turns read, less those it covers.
func (m *Memory) StartRead(ctx context.Context, tenantID string, conversationID, afterID int64) *MemoryRead {
	r := &MemoryRead{m: m, tenantID: tenantID, conversationID: conversationID, afterID: afterID}
	if m.Redis != nil {
		r.key = m.key(tenantID, conversationID)
		r.cached, r.hit, r.redisErr = m.get(ctx, r.key)
	}
	return r
}

// Queue adds the read of the messages the cache does not have to b.
func (r *MemoryRead) Queue(b *pgx.Batch) {
	from := r.afterID
	if r.hit {
		from = max(r.cached.Through, from)
	}
	queueRecentTurns(b, r.tenantID, r.conversationID, from, r.m.Window, r.m.Settle, &r.fresh)
}

// source says where the turns come from.
func (r *MemoryRead) source() string {
	switch {
	case r.m.Redis == nil:
		return "postgres (no redis)"
	case r.redisErr != nil:
		return "postgres (redis unavailable)"
	case r.hit:
		return "redis"
	}
	return "postgres"
}

// Turns is the read's result once Queue's batch has run: the last Window
// turns after afterID, oldest first, and where they came from (as Recent).
// It caches the settled turns when they reach past what is cached.
func (r *MemoryRead) Turns(ctx context.Context, afterID int64) ([]MemoryTurn, string) {
	m := r.m
	var turns []MemoryTurn
	if r.hit {
		for _, t := range r.cached.Turns {
			if t.ID > afterID {
				t.Settled = true
				turns = append(turns, t)
			}
		}
	}
	for _, t := range r.fresh {
		if t.ID > afterID {
			turns = append(turns, t)
		}
	}
	if len(turns) > m.Window {
		turns = turns[len(turns)-m.Window:]
	}
	if m.Redis != nil && r.redisErr == nil {
		// Cache the settled prefix when it reaches past what is cached.
		var settled []MemoryTurn
		for _, t := range turns {
			if !t.Settled {
				break
			}
			settled = append(settled, t)
		}
		if n := len(settled); n > 0 && (!r.hit || settled[n-1].ID > r.cached.Through) {
			m.set(ctx, r.key, cachedTurns{Through: settled[n-1].ID, Turns: settled})
		}
	}
	return turns, r.source()
}

// MemoryPrefix is the key prefix of the memory every Conversa process
// shares in Redis ("conversa:"): the turns cache it, erasure clears it.
const MemoryPrefix = "conversa:"

// erasedMarker is what an erased conversation's key holds for erasedTTL: no
// turn may cache into it meanwhile (setScript), so a turn that read Postgres
// just before an erasure committed cannot put the erased words back.
// A turn's read and its cache write are one call (Recent), far shorter.
const (
	erasedMarker = "erased"
	erasedTTL    = time.Minute
)

// setScript caches a conversation's turns unless the key holds the erased
// marker.
var setScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

// ErrMemoryUnavailable is returned when Redis is configured but the cached
// turns of an erased conversation could not be removed from it.
var ErrMemoryUnavailable = errors.New("conversation memory (Redis) unavailable")

// Erase replaces the cached turns of the conversations with the erased
// marker, before the erasure in Postgres commits (see erasedMarker). With
// Redis configured but failing it returns ErrMemoryUnavailable: the caller
// must not commit an erasure Redis may still hold.
func (m *Memory) Erase(ctx context.Context, tenantID string, conversationIDs []int64) error {
	if m.Redis == nil || len(conversationIDs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, max(m.Timeout, time.Second))
	defer cancel()
	pipe := m.Redis.Pipeline()
	for _, id := range conversationIDs {
		pipe.Set(ctx, m.key(tenantID, id), erasedMarker, erasedTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrMemoryUnavailable, err)
	}
	return nil
}

// Forget drops a conversation's cached turns (after a stored turn changed,
// e.g. a voice note's transcript was written).
func (m *Memory) Forget(ctx context.Context, tenantID string, conversationID int64) {
	if m.Redis == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	_ = m.Redis.Del(ctx, m.key(tenantID, conversationID)).Err()
}

func (m *Memory) get(ctx context.Context, key string) (cachedTurns, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	b, err := m.Redis.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return cachedTurns{}, false, nil
	}
	if err != nil {
		return cachedTurns{}, false, err
	}
	var c cachedTurns
	if err := json.Unmarshal(b, &c); err != nil {
		// A corrupt entry is a miss; the rebuild overwrites it.
		return cachedTurns{}, false, nil
	}
	return c, true, nil
}

// set writes the cache best-effort: a failure only costs a later miss. It
// never overwrites an erased conversation's marker.
func (m *Memory) set(ctx context.Context, key string, c cachedTurns) {
	b, err := json.Marshal(c)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	_ = setScript.Run(ctx, m.Redis, []string{key}, b, m.TTL.Milliseconds(), erasedMarker).Err()
}

// queueRecentTurns queues the read of the last limit messages after
// afterID, oldest first, into turns.
func queueRecentTurns(b *pgx.Batch, tenantID string, conversationID, afterID int64, limit int, settle time.Duration, turns *[]MemoryTurn) {
	b.Queue(`
		SELECT id, author, body, during_handoff, media, transcript, settled FROM (
			SELECT id, author, body, during_handoff, media, transcript,
			       created_at < clock_timestamp() - make_interval(secs => $5) AS settled
			FROM messages
			WHERE conversation_id = $1 AND tenant_id = $2 AND id > $3
			ORDER BY id DESC LIMIT $4
		) r ORDER BY id`, conversationID, tenantID, afterID, limit, settle.Seconds()).Query(func(rows pgx.Rows) error {
		var err error
		if *turns, err = pgx.CollectRows(rows, pgx.RowToStructByName[MemoryTurn]); err != nil {
			return fmt.Errorf("recent turns: %w", err)
		}
		return nil
	})
}
