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

// Recent returns the conversation's last Window turns after afterID (the
// summary's end), oldest first, and where they came from: "redis" (cache plus
// the newer messages from Postgres), "postgres" (a miss, cache rebuilt),
// "postgres (no redis)" or "postgres (redis unavailable)".
func (m *Memory) Recent(ctx context.Context, db DBTX, tenantID string, conversationID, afterID int64) ([]MemoryTurn, string, error) {
	if m.Redis == nil {
		turns, err := recentTurns(ctx, db, tenantID, conversationID, afterID, m.Window, m.Settle)
		return turns, "postgres (no redis)", err
	}
	key := m.key(tenantID, conversationID)
	cached, hit, redisErr := m.get(ctx, key)
	source := "postgres"
	from := afterID
	var turns []MemoryTurn
	switch {
	case redisErr != nil:
		source = "postgres (redis unavailable)"
	case hit:
		source = "redis"
		for _, t := range cached.Turns {
			if t.ID > afterID {
				t.Settled = true
				turns = append(turns, t)
			}
		}
		from = max(cached.Through, afterID)
	}
	fresh, err := recentTurns(ctx, db, tenantID, conversationID, from, m.Window, m.Settle)
	if err != nil {
		return nil, source, err
	}
	turns = append(turns, fresh...)
	if len(turns) > m.Window {
		turns = turns[len(turns)-m.Window:]
	}
	if redisErr == nil {
		// Cache the settled prefix when it reaches past what is cached.
		var settled []MemoryTurn
		for _, t := range turns {
			if !t.Settled {
				break
			}
			settled = append(settled, t)
		}
		if n := len(settled); n > 0 && (!hit || settled[n-1].ID > cached.Through) {
			m.set(ctx, key, cachedTurns{Through: settled[n-1].ID, Turns: settled})
		}
	}
	return turns, source, nil
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

// recentTurns reads the last limit messages after afterID, oldest first.
func recentTurns(ctx context.Context, db DBTX, tenantID string, conversationID, afterID int64, limit int, settle time.Duration) ([]MemoryTurn, error) {
	rows, err := db.Query(ctx, `
		SELECT id, author, body, during_handoff, media, transcript, settled FROM (
			SELECT id, author, body, during_handoff, media, transcript,
			       created_at < clock_timestamp() - make_interval(secs => $5) AS settled
			FROM messages
			WHERE conversation_id = $1 AND tenant_id = $2 AND id > $3
			ORDER BY id DESC LIMIT $4
		) r ORDER BY id`, conversationID, tenantID, afterID, limit, settle.Seconds())
	if err != nil {
		return nil, fmt.Errorf("recent turns: %w", err)
	}
	turns, err := pgx.CollectRows(rows, pgx.RowToStructByName[MemoryTurn])
	if err != nil {
		return nil, fmt.Errorf("recent turns: %w", err)
	}
	return turns, nil
}
