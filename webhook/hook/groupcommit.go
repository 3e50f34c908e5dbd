package hook

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conversa/conversa/store"
)

// Group commit: concurrent webhooks share one transaction. Every request
// still gets its answer only after the transaction holding its writes has
// committed; a synchronous commit is the expensive part of a webhook, and one
// commit for many requests is what lets the edge outrun the
// one-commit-per-request ceiling of the disk.
const (
	maxBatch     = 64
	maxBatchWait = 500 * time.Microsecond
)

// committer group-commits the edge's hot transactions: inbound messages with
// their turn jobs (ingest.go), and status callbacks (status.go). Its zero
// value, with s set, is ready to use.
type committer struct {
	s        *Server
	inbound  groupCommitter[store.Inbound, store.InboundResult]
	statuses groupCommitter[statusCallback, statusResult]
}

// commitFunc runs one transaction for items: it returns one result per item,
// in order, or an error after which none of them was written.
type commitFunc[In, Out any] func(ctx context.Context, items []In) ([]Out, error)

// groupCommitter gathers concurrent calls into batches, each committed by one
// commitFunc call. The first call to open a batch leads it: it waits up to
// maxBatchWait for others to join, then commits for all. No background
// goroutine, so nothing to start or stop; the zero value is ready to use.
type groupCommitter[In, Out any] struct {
	mu   sync.Mutex
	open *batch[In, Out]
	// inflight counts calls between entering do and their answer;
	// lastFlush is when the last batch finished (unix nanoseconds).
	inflight  atomic.Int64
	lastFlush atomic.Int64
}

// busyWindow: a batch that finished this recently means requests are
// arriving back to back, and the next leader waits for followers.
const busyWindow = 5 * time.Millisecond

// batch is a set of items committed together.
type batch[In, Out any] struct {
	items   []In
	results []result[Out]
	full    chan struct{}
	done    chan struct{}
}

// result is one item's outcome.
type result[Out any] struct {
	out Out
	err error
}

// do commits in together with concurrent calls and returns its result once
// the batch is durable, or an error after which nothing of in was written
// (or, when ctx ends first, ctx's error: the batch still commits or not).
// The leader's commit runs the batch, so every caller of one groupCommitter
// passes the same commit. log hears of batches that fail.
func (g *groupCommitter[In, Out]) do(ctx context.Context, in In, commit commitFunc[In, Out], log *slog.Logger) (Out, error) {
	g.inflight.Add(1)
	defer g.inflight.Add(-1)
	g.mu.Lock()
	b, leader := g.open, false
	if b == nil {
		b = &batch[In, Out]{full: make(chan struct{}), done: make(chan struct{})}
		g.open, leader = b, true
	}
	i := len(b.items)
	b.items = append(b.items, in)
	if len(b.items) == maxBatch {
		g.open = nil
		close(b.full)
	}
	g.mu.Unlock()

	// Under light load a leader commits at once: no other call is in
	// flight and no batch finished in the last busyWindow, so waiting would
	// only add maxBatchWait to its latency. Under load one of the two holds
	// (a batch is committing, or one just answered a crowd of callers whose
	// next requests are on their way), and the leader waits for followers.
	if leader && (g.inflight.Load() > 1 || time.Now().UnixNano()-g.lastFlush.Load() < int64(busyWindow)) {
		t := time.NewTimer(maxBatchWait)
		select {
		case <-t.C:
		case <-b.full:
			t.Stop()
		}
	}
	if leader {
		g.mu.Lock()
		if g.open == b {
			g.open = nil
		}
		g.mu.Unlock()
		// The batch outlives the leader's request: a cancelled leader must
		// not fail its followers.
		b.flush(context.WithoutCancel(ctx), commit, log)
		g.lastFlush.Store(time.Now().UnixNano())
		close(b.done)
	}
	select {
	case <-b.done:
		return b.results[i].out, b.results[i].err
	case <-ctx.Done():
		// The client went away; the batch still commits or not as a whole,
		// and a redelivery finds (and dedupes) what did.
		var zero Out
		return zero, ctx.Err()
	}
}

// flush commits a batch in one transaction. If that fails, each item is
// retried alone, so one bad item never fails its neighbours.
func (b *batch[In, Out]) flush(ctx context.Context, commit commitFunc[In, Out], log *slog.Logger) {
	b.results = make([]result[Out], len(b.items))
	if len(b.items) > 1 {
		outs, err := commit(ctx, b.items)
		if err == nil {
			for i, out := range outs {
				b.results[i] = result[Out]{out: out}
			}
			return
		}
		log.Warn("group commit failed; committing its items one by one", "size", len(b.items), "error", err.Error())
	}
	for i, in := range b.items {
		outs, err := commit(ctx, []In{in})
		if err != nil {
			b.results[i] = result[Out]{err: err}
			continue
		}
		b.results[i] = result[Out]{out: outs[0]}
	}
}
