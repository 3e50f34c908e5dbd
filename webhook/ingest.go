package webhook

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/store"
)

// Group commit: concurrent webhooks share one transaction. Every request
// still gets its answer only after the transaction holding its message and
// job has committed; a synchronous commit is the expensive part of ingest,
// and one commit for many messages is what lets ingest outrun the
// one-commit-per-message ceiling.
const (
	maxBatch     = 64
	maxBatchWait = 500 * time.Microsecond
)

// ingestResult is one request's outcome.
type ingestResult struct {
	res store.InboundResult
	err error
}

// batch is a set of requests committed together. The first request to open
// a batch leads it: it waits up to maxBatchWait for others to join, then
// commits for all. No background goroutine, so nothing to start or stop.
type batch struct {
	ins     []store.Inbound
	results []ingestResult
	full    chan struct{}
	done    chan struct{}
}

// committer gathers concurrent ingests into batches.
type committer struct {
	mu   sync.Mutex
	open *batch
	s    *server
}

// ingest commits one inbound message (with its turn job) and returns once it
// is durable, or with an error after which nothing of it was written.
func (g *committer) ingest(ctx context.Context, in store.Inbound) (store.InboundResult, error) {
	g.mu.Lock()
	b, leader := g.open, false
	if b == nil {
		b = &batch{full: make(chan struct{}), done: make(chan struct{})}
		g.open, leader = b, true
	}
	i := len(b.ins)
	b.ins = append(b.ins, in)
	if len(b.ins) == maxBatch {
		g.open = nil
		close(b.full)
	}
	g.mu.Unlock()

	if leader {
		t := time.NewTimer(maxBatchWait)
		select {
		case <-t.C:
		case <-b.full:
			t.Stop()
		}
		g.mu.Lock()
		if g.open == b {
			g.open = nil
		}
		g.mu.Unlock()
		// The batch outlives the leader's request: a cancelled leader must
		// not fail its followers.
		g.s.flush(context.WithoutCancel(ctx), b)
		close(b.done)
	}
	select {
	case <-b.done:
		return b.results[i].res, b.results[i].err
	case <-ctx.Done():
		// The client went away; the batch still commits or not as a whole,
		// and a redelivery will find the message if it did.
		return store.InboundResult{}, ctx.Err()
	}
}

// flush commits a batch in one transaction. If anything in it fails, each
// message is retried alone, so one bad message never fails its neighbours.
func (s *server) flush(ctx context.Context, b *batch) {
	b.results = make([]ingestResult, len(b.ins))
	if len(b.ins) > 1 {
		results, err := s.commitBatch(ctx, b.ins)
		if err == nil {
			for i, r := range results {
				b.results[i] = ingestResult{res: r}
			}
			return
		}
		s.Logger.Warn("ingest batch failed; committing its messages one by one", "size", len(b.ins), "error", err.Error())
	}
	for i, in := range b.ins {
		res, err := s.commitBatch(ctx, []store.Inbound{in})
		if err != nil {
			b.results[i] = ingestResult{err: err}
			continue
		}
		b.results[i] = ingestResult{res: res[0]}
	}
}

// commitBatch is the ingest transaction for one or more messages: messages,
// contacts, conversations and turn jobs commit together, or nothing does.
func (s *server) commitBatch(ctx context.Context, ins []store.Inbound) ([]store.InboundResult, error) {
	// Two copies of one MessageSid in a batch: the later one is a duplicate.
	seen := make(map[string]int, len(ins))
	unique := make([]store.Inbound, 0, len(ins))
	for _, in := range ins {
		if _, ok := seen[in.MessageSID]; !ok {
			seen[in.MessageSID] = len(unique)
			unique = append(unique, in)
		}
	}
	tx, err := s.DB.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	var results []store.InboundResult
	if len(unique) == 1 {
		r, err := store.InsertInbound(ctx, tx, unique[0])
		if err != nil {
			return nil, err
		}
		results = []store.InboundResult{r}
	} else if results, err = store.InsertInboundBatch(ctx, tx, unique); err != nil {
		return nil, err
	}
	var params []river.InsertManyParams
	for i, r := range results {
		if !r.Duplicate && answerable(r, unique[i]) {
			params = append(params, river.InsertManyParams{Args: s.turnArgs(unique[i].TenantID, r), InsertOpts: s.turnOpts()})
		}
	}
	if len(params) > 0 {
		if _, err := s.River.InsertManyTx(ctx, tx, params); err != nil {
			return nil, fmt.Errorf("insert reply jobs: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	out := make([]store.InboundResult, len(ins))
	used := make(map[string]bool, len(ins))
	for i, in := range ins {
		out[i] = results[seen[in.MessageSID]]
		if used[in.MessageSID] {
			out[i] = store.InboundResult{Duplicate: true, ConversationID: out[i].ConversationID}
		}
		used[in.MessageSID] = true
	}
	return out, nil
}

// answerable reports whether the bot should answer this message: not while a
// human has the conversation, not for an opted-out contact, and not for an
// opt-out/opt-in keyword itself.
func answerable(res store.InboundResult, in store.Inbound) bool {
	return res.ConversationStatus == "bot" && !res.OptedOut && in.OptOut == nil
}

// turnArgs is the conversa.reply job for a new inbound message.
func (s *server) turnArgs(tenantID string, res store.InboundResult) jobs.ReplyArgs {
	return jobs.ReplyArgs{TenantID: tenantID, ConversationID: res.ConversationID, MessageID: res.MessageID}
}

// turnOpts makes the turn runnable once the conversation has been quiet for
// Debounce; a newer message supersedes it with a turn of its own. With no
// debounce there is no ScheduledAt at all (see FACTS: any ScheduledAt
// inserts a "scheduled" job).
func (s *server) turnOpts() *river.InsertOpts {
	if s.Debounce <= 0 {
		return nil
	}
	return &river.InsertOpts{ScheduledAt: s.Now().Add(s.Debounce)}
}
