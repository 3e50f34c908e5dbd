package hook

import (
	"context"
	"fmt"

	"github.com/riverqueue/river"

	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// ingest commits one inbound message (with its turn job), grouped with
// concurrent ingests into one transaction, and returns once it is durable,
// or with an error after which nothing of it was written.
func (g *committer) ingest(ctx context.Context, in store.Inbound) (store.InboundResult, error) {
	return g.inbound.do(ctx, in, g.s.commitInbound, g.s.Logger)
}

// commitInbound is the ingest transaction for one or more messages: messages,
// contacts, conversations and turn jobs commit together, or nothing does.
func (s *Server) commitInbound(ctx context.Context, ins []store.Inbound) ([]store.InboundResult, error) {
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
	return res.ConversationStatus == store.ConversationBot && !res.OptedOut && in.OptOut == nil
}

// turnArgs is the conversa.reply job for a new inbound message.
func (s *Server) turnArgs(tenantID string, res store.InboundResult) jobargs.ReplyArgs {
	return jobargs.ReplyArgs{TenantID: tenantID, ConversationID: res.ConversationID, MessageID: res.MessageID}
}

// turnOpts makes the turn runnable once the conversation has been quiet for
// Debounce; a newer message supersedes it with a turn of its own. With no
// debounce there is no ScheduledAt at all: any ScheduledAt inserts a
// "scheduled" job, which jobargs.ShortDelayMiddleware turns back into an
// "available" one only within its range (see README, "Latency and
// recovery").
func (s *Server) turnOpts() *river.InsertOpts {
	if s.Debounce <= 0 {
		return nil
	}
	return &river.InsertOpts{ScheduledAt: s.Now().Add(s.Debounce)}
}
