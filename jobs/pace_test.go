package jobs_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
)

// pacingBackends are the pacer's stores: Redis, Postgres when Redis is
// unset, and Postgres when Redis is down.
func pacingBackends(t testing.TB) map[string]func() *redis.Client {
	t.Helper()
	client := func(addr string) func() *redis.Client {
		return func() *redis.Client {
			rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
			t.Cleanup(func() { _ = rdb.Close() })
			return rdb
		}
	}
	return map[string]func() *redis.Client{
		"redis":      client("127.0.0.1:6379"),
		"postgres":   func() *redis.Client { return nil },
		"redis down": client("127.0.0.1:1"),
	}
}

func TestPacerSpacesSlotsAndSnoozesBeyondMaxWait(t *testing.T) {
	t.Parallel()
	for name, rdb := range pacingBackends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := &jobs.Pacer{Redis: rdb(), DB: testdb.Tx(t), MaxWait: time.Second}
			addr := testdb.PhoneNumber()

			wait, ok, err := p.Reserve(ctx, addr, 1)
			require.NoError(t, err)
			require.True(t, ok)
			require.Less(t, wait, 100*time.Millisecond, "the first slot is now")

			wait, ok, err = p.Reserve(ctx, addr, 1)
			require.NoError(t, err)
			require.True(t, ok, "a slot one interval ahead is within MaxWait")
			require.InDelta(t, time.Second.Seconds(), wait.Seconds(), 0.2)

			wait, ok, err = p.Reserve(ctx, addr, 1)
			require.NoError(t, err)
			require.False(t, ok, "two intervals ahead: snooze instead of holding a worker")
			require.InDelta(t, time.Second.Seconds(), wait.Seconds(), 0.2)

			_, ok, err = p.Reserve(ctx, testdb.PhoneNumber(), 1)
			require.NoError(t, err)
			require.True(t, ok, "numbers are paced independently")
		})
	}
}

func TestSendPacingKeepsANumberAtItsRate(t *testing.T) {
	t.Parallel()
	for name, rdb := range pacingBackends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool := testdb.Pool(t)
			e := newSendEnv(t, envOpts{db: pool, redis: rdb()})
			const rate, n = 10.0, 8
			_, err := pool.Exec(ctx, `UPDATE channels SET rate_per_second = $2 WHERE address = $1`, e.ten.SMS, rate)
			require.NoError(t, err)
			contact := testdb.PhoneNumber()
			conv := e.conversation(t, e.ten.SMS, contact)
			ids := make([]int64, n)
			for i := range ids {
				ids[i] = e.outbound(t, conv, "message")
			}

			// Every send runs at once, as n workers (or n processes) would.
			errs := make(chan error, n)
			for _, id := range ids {
				go func() { errs <- workInOwnTx(ctx, t, pool, e, id) }()
			}
			for range ids {
				require.NoError(t, <-errs)
			}

			got := e.fake.Accepted(contact)
			require.Len(t, got, n)
			times := make([]time.Time, n)
			for i, m := range got {
				times[i] = m.Created
			}
			slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
			span := times[n-1].Sub(times[0])
			interval := time.Duration(float64(time.Second) / rate)
			// n sends at rate r span (n-1)/r at the pacer (asserted exactly in
			// TestPacerSpacesSlotsAndSnoozesBeyondMaxWait). What reaches the fake
			// carries each request's own latency, which on a loaded machine can
			// shift one send by more than an interval, so this end-to-end check
			// asks only that the sends were spread out: unpaced, all n arrive
			// within a few milliseconds.
			require.GreaterOrEqual(t, span, time.Duration(n-1)*interval/2, "sends at the fake: %v", times)
			t.Logf("%s: %d sends in %v at the fake: %.1f/s (rate %.0f/s)", name, n, span, float64(n-1)/span.Seconds(), rate)
		})
	}
}

// workInOwnTx works one send job in a transaction of its own, as a worker process would.
func workInOwnTx(ctx context.Context, t testing.TB, pool *pgxpool.Pool, e *sendEnv, id int64) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	res, err := e.worker.Work(ctx, t, tx, jobargs.SendArgs{TenantID: e.ten.ID, MessageID: id}, nil)
	if err != nil {
		return err
	}
	if res.EventKind != river.EventKindJobCompleted {
		return errFromKind(res.EventKind)
	}
	return tx.Commit(ctx)
}

type errFromKind river.EventKind

func (k errFromKind) Error() string { return "job ended " + string(k) }
