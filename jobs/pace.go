package jobs

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/conversa/conversa/store"
)

// Pacer spaces sends per sender number across every worker process: a GCRA
// bucket in Redis (one atomic script, Redis's own clock), or in Postgres when
// Redis is unset or fails. A caller gets a slot at most MaxWait ahead and
// sleeps until it; when none is that close it snoozes its job instead of
// holding a worker.
type Pacer struct {
	Redis   *redis.Client
	DB      store.DBTX
	MaxWait time.Duration
	Logger  *slog.Logger

	// redisDownUntil (unix nanoseconds) skips Redis for a while after it
	// failed, so a dead Redis costs one failed call, not one per send.
	redisDownUntil atomic.Int64
}

// redisRetryAfter is how long the pacer stays on Postgres after Redis failed.
const redisRetryAfter = 5 * time.Second

// paceScript reserves the next slot of KEYS[1]; ARGV: interval and max wait
// in microseconds. It returns {1, wait} for a slot taken, {0, retry-after}
// when no slot is free within max wait.
var paceScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local maxwait = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if wait > maxwait then return {0, wait - maxwait} end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.floor((wait + interval) / 1000) + 1000)
return {1, wait}
`)

// Reserve takes the next send slot of address at rate per second. ok false
// means no slot is free within MaxWait; come back after wait.
func (p *Pacer) Reserve(ctx context.Context, address string, rate float64) (wait time.Duration, ok bool, err error) {
	return p.reserveWithin(ctx, address, rate, p.MaxWait)
}

// reserveWithin is Reserve with a slot at most maxWait ahead.
func (p *Pacer) reserveWithin(ctx context.Context, address string, rate float64, maxWait time.Duration) (wait time.Duration, ok bool, err error) {
	interval := time.Duration(float64(time.Second) / rate)
	if p.Redis != nil && time.Now().UnixNano() >= p.redisDownUntil.Load() {
		res, err := paceScript.Run(ctx, p.Redis, []string{"conversa:pace:" + address},
			interval.Microseconds(), maxWait.Microseconds()).Int64Slice()
		if err == nil && len(res) == 2 {
			return time.Duration(res[1]) * time.Microsecond, res[0] == 1, nil
		}
		if ctx.Err() != nil {
			return 0, false, ctx.Err()
		}
		p.redisDownUntil.Store(time.Now().Add(redisRetryAfter).UnixNano())
		if p.Logger != nil {
			p.Logger.Warn("redis pacing unavailable; pacing in postgres", "error", err)
		}
	}
	return store.ReservePace(ctx, p.DB, address, interval, maxWait)
}
