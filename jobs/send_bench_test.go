package jobs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"

	"github.com/conversa/conversa/internal/testdb"
)

// workers is how many sends run at once: each holds a job transaction and
// needs a second connection, and the test Postgres is shared.
const workers = 12

// benchmarkSends sends b.N messages from one WhatsApp number through
// concurrent workers and reports messages per
// second accepted by the fake. rate 0 keeps the number's default (80/s).
func benchmarkSends(b *testing.B, rate float64) {
	ctx := context.Background()
	// Each worker holds its job's transaction and needs connections of its own.
	cfg, err := pgxpool.ParseConfig(testdb.URL(b))
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 30
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	b.Cleanup(func() { _ = rdb.Close() })
	e := newSendEnv(b, envOpts{db: pool, redis: rdb, timeout: 5 * time.Second})
	if rate > 0 {
		if _, err := pool.Exec(ctx, `UPDATE channels SET rate_per_second = $2 WHERE address = $1`, e.ten.WhatsApp, rate); err != nil {
			b.Fatal(err)
		}
	}
	contact := "whatsapp:" + testdb.PhoneNumber()
	conv := e.conversation(b, e.ten.WhatsApp, contact)
	ids := make(chan int64, b.N)
	for range b.N {
		ids <- e.outbound(b, conv, "benchmark")
	}
	close(ids)

	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				for {
					err := workInOwnTx(ctx, b, pool, e, id)
					var k errFromKind
					if errors.As(err, &k) && river.EventKind(k) == river.EventKindJobSnoozed {
						time.Sleep(20 * time.Millisecond) // River would refetch it after the snooze
						continue
					}
					if err != nil {
						errs <- err
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	if got := len(e.fake.Accepted(contact)); got != b.N {
		b.Fatalf("fake accepted %d of %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}

// BenchmarkSendOneWhatsAppNumber is one number at its default 80/s.
func BenchmarkSendOneWhatsAppNumber(b *testing.B) { benchmarkSends(b, 0) }

// BenchmarkSendUnpaced lifts the rate limit to measure the send path itself.
func BenchmarkSendUnpaced(b *testing.B) { benchmarkSends(b, 1e6) }
