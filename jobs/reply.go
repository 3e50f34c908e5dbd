package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

const replyKind = "conversa.reply"

// ReplyWorker works conversa.reply: one AI turn of a conversation.
//
// It reads the turn state (one query) and skips, completing with a trace
// event on the inbound message, when a newer message superseded the turn,
// the conversation is not the bot's, the contact opted out, or the tenant
// cannot pay (turn.no_credits, before any LLM call). It snoozes until the
// conversation has been quiet for Debounce. Then it loads memory, lets the
// routing agent pick an agent, and runs it. Everything the turn decides is
// committed in one transaction: the reply row (unique per turn, so a retried
// or duplicated turn can never write a second reply), the debit, the summary,
// a handoff, the trace events, the conversa.send job and the job's own
// completion. The LLM may be called again on a retry; nothing is sent twice.
//
// On a handoff the bot sends one short notice ("connecting you with a
// person") as the turn's reply, so the customer does not meet silence; it
// is charged like any reply since the LLM ran. After that the conversation
// is "human" and the bot stays silent until an operator hands it back.
type ReplyWorker struct {
	river.WorkerDefaults[jobargs.ReplyArgs]
	db       DB
	provider agents.Provider
	memory   *store.Memory
	logger   *slog.Logger
	debounce time.Duration
	metrics  *Metrics
	// llmTimeout sets the job's timeout (TurnTimeout); giveUp is how long
	// after the customer's message an unavailable LLM is waited for.
	llmTimeout, giveUp time.Duration
	// media fetches and transcribes attachments (media.go); sealer opens the
	// account token media is fetched with.
	media  Media
	sealer *store.Sealer
	// beforeCommit, when set (tests), runs inside the turn's transaction
	// just before commit; an error fails the attempt.
	beforeCommit func(ctx context.Context, tx pgx.Tx) error
	// tools POSTs the agents' HTTP tool calls (tools.go); afterToolCall,
	// when set (tests), runs between a POST and its record.
	tools         ToolHTTP
	afterToolCall func(ctx context.Context, c store.ToolCall) error
}

// NewReplyWorker builds the conversa.reply worker from d. A nil d.LLM means
// the offline provider; a nil d.Memory means memory on d.Redis under the
// "conversa:" prefix.
func NewReplyWorker(d Deps) *ReplyWorker {
	p := d.LLM
	if p == nil {
		p = agents.NewOffline()
	}
	mem := d.Memory
	if mem == nil {
		mem = store.NewMemory(d.Redis, store.MemoryPrefix, agents.MemoryWindow)
	}
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rw := &ReplyWorker{db: d.DB, provider: p, memory: mem, logger: logger, debounce: d.Debounce, metrics: d.Metrics,
		llmTimeout: cmp.Or(d.LLMTimeout, DefaultLLMTimeout), giveUp: cmp.Or(d.LLMGiveUp, DefaultLLMGiveUp),
		media: d.Media, sealer: d.Sealer, tools: d.Tools}
	if rw.tools.Client == nil {
		rw.tools = NewToolHTTP(false)
	}
	if rw.media.Timeout <= 0 {
		rw.media.Timeout = DefaultMediaTimeout
	}
	return rw
}

// skipReason says why a turn must not answer, or "" when it may.
func skipReason(st store.TurnState, messageID int64) (string, map[string]any) {
	switch {
	case st.LastInboundMessageID == nil || *st.LastInboundMessageID != messageID:
		d := map[string]any{"reason": "superseded"}
		if st.LastInboundMessageID != nil {
			d["by_message_id"] = *st.LastInboundMessageID
		}
		return "superseded", d
	case st.Status != store.ConversationBot:
		return "conversation_" + string(st.Status), map[string]any{"reason": "conversation is " + string(st.Status) + ", not bot"}
	case st.OptedOut:
		return "opted_out", map[string]any{"reason": "contact opted out"}
	}
	return "", nil
}

// Work implements river.Worker.
func (w *ReplyWorker) Work(ctx context.Context, job *river.Job[jobargs.ReplyArgs]) error {
	a := job.Args
	log := w.logger.With("tenant_id", a.TenantID, "conversation_id", a.ConversationID,
		"message_id", a.MessageID, "job_id", job.ID, "job_kind", replyKind)
	outcome, err := w.turn(ctx, log, job)
	if err != nil {
		var snooze *river.JobSnoozeError
		var cancel *river.JobCancelError
		switch {
		case errors.As(err, &snooze), errors.As(err, &cancel):
		default:
			reason := failureReason(err)
			log.Warn("turn failed", "attempt", job.Attempt, "max_attempts", job.MaxAttempts, "error", reason)
			if job.Attempt >= job.MaxAttempts {
				// The last attempt: say so on the inbound message, which
				// otherwise would just never be answered.
				ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				defer cancel()
				_ = store.AddEvent(ectx, w.db, job.Args.TenantID, job.Args.MessageID, "turn.failed",
					map[string]any{"reason": "gave up after " + fmt.Sprint(job.Attempt) + " attempts", "error": reason})
			}
		}
	}
	noteOutcome(ctx, outcome)
	return err
}

// NextRetry retries a failed turn soon: a reply that comes hours late is
// worth little, so the schedule is 2 s, 5 s, 15 s, 30 s, 1 min, 2 min, then
// every 5 min, instead of River's (attempt+1)^4 s.
func (w *ReplyWorker) NextRetry(job *river.Job[jobargs.ReplyArgs]) time.Time {
	steps := []time.Duration{2 * time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute}
	return time.Now().Add(steps[min(max(job.Attempt-1, 0), len(steps)-1)])
}

// llmError marks a provider failure, so it is reported by class only: a
// provider's error text may quote the conversation.
type llmError struct{ err error }

func (e llmError) Error() string { return "llm: " + agents.ErrorClass(e.err) }
func (e llmError) Unwrap() error { return e.err }

// failureReason is an error as the trace and the logs may show it.
func failureReason(err error) string {
	var le llmError
	if errors.As(err, &le) {
		return le.Error()
	}
	return err.Error()
}

// turn runs one turn and returns how it ended for conversa_jobs_total
// (noteOutcome; it counts when the job completes).
func (w *ReplyWorker) turn(ctx context.Context, log *slog.Logger, job *river.Job[jobargs.ReplyArgs]) (string, error) {
	a := job.Args
	// The memory's Postgres read rides in the same round trip; its cache
	// part comes first (Redis).
	memRead := w.memory.StartRead(ctx, a.TenantID, a.ConversationID, 0)
	st, stored, err := store.GetTurnInputs(ctx, w.db, a.TenantID, a.ConversationID, memRead.Queue)
	readAt := time.Now()
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("turn cancelled: conversation not found")
		return JobCancelled, river.JobCancel(err)
	}
	if err != nil {
		return "", err
	}
	if reason, detail := skipReason(st, a.MessageID); reason != "" {
		return w.skip(ctx, log, a, "turn.skipped", reason, detail)
	}
	if remaining := w.debounce - st.QuietFor(); remaining > 0 {
		return JobSnoozed, river.JobSnooze(remaining)
	}
	price := st.ReplyPrice
	if st.Credits < int64(price) {
		return w.skip(ctx, log, a, "turn.no_credits", "no_credits",
			map[string]any{"reason": "tenant has no credits for a reply", "credits": st.Credits, "reply_price": price})
	}

	mem, source := memRead.Turns(ctx, st.SummaryThroughID)
	plan := agents.PlanMemory(memoryTurns(mem, a.MessageID, nil))
	if len(plan.Pending) == 0 {
		return w.skip(ctx, log, a, "turn.skipped", "nothing_to_answer",
			map[string]any{"reason": "no customer message to answer since the last reply"})
	}
	// Voice notes are transcribed before the agent runs (and before routing,
	// which reads the words); see media.go.
	if transcribed, states := w.transcribe(ctx, log, a, mem, plan.PendingIDs); states != nil {
		mem = transcribed
		plan = agents.PlanMemory(memoryTurns(mem, a.MessageID, states))
	}
	// Turns too old to show verbatim are folded into the summary now, so the
	// agent sees them; the new summary commits with the reply.
	summary := st.Summary
	if len(plan.Fold) > 0 {
		summary = agents.FoldSummary(st.Summary, plan.Fold)
	}
	req := agents.Request{Summary: summary, History: plan.History, Pending: plan.Pending, CurrentAgent: st.CurrentAgent}
	agent, route := agents.Choose(ctx, w.provider, stored, req)
	req.Agent = agent
	if agent.Vision {
		req.Images = w.images(ctx, log, a, mem, plan.PendingIDs)
	}
	if route.Usage != nil {
		w.metrics.LLM(route.Usage.Provider, route.Usage.Model, route.Usage.Latency, route.Usage.PromptTokens, route.Usage.CompletionTokens)
	}
	var knowledge turnKnowledge
	if st.HasKnowledge {
		if knowledge, err = w.knowledge(ctx, a, agent, plan.Pending); err != nil {
			return "", err
		}
	}
	req.Knowledge = knowledge.passages
	ans, toolEvents, err := w.answer(ctx, log, job, req)
	var toolErr toolRoundError
	if errors.As(err, &toolErr) {
		return "", err
	}
	if err != nil {
		// Recorded outside any transaction so the trace keeps every failed
		// attempt (even one cut by the job timeout); the error makes River
		// retry the turn.
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = store.AddEvent(ectx, w.db, a.TenantID, a.MessageID, "turn.llm_failed", map[string]any{
			"provider": w.provider.Name(), "agent": agent.Name, "attempt": job.Attempt,
			"error": agents.ErrorClass(err), "latency_ms": ans.Usage.LatencyMS,
		})
		age := st.QuietFor() + time.Since(readAt)
		switch verdict, wait, reason := w.judgeProviderError(err, age, job.Attempt, job.MaxAttempts); verdict {
		case verdictWait:
			log.Info("turn waits for the LLM", "reason", reason, "wait_ms", wait.Milliseconds())
			return JobSnoozed, river.JobSnooze(wait)
		case verdictGiveUp:
			return w.handOver(ctx, log, job, agent, reason, age, err)
		}
		return "", fmt.Errorf("agent %s reply: %w", agent.Name, llmError{err})
	}
	log.Info("agent answered", "agent", agent.Name, "route_by", route.By, "provider", ans.Usage.Provider,
		"model", ans.Usage.Model, "latency_ms", ans.Usage.LatencyMS, "handoff", ans.Handoff)

	events := []store.Event{
		{Kind: "turn.routed", Detail: route},
		{Kind: "turn.llm", Detail: ans.Usage},
		{Kind: "turn.memory", Detail: map[string]any{"source": source, "history_turns": len(plan.History),
			"pending_messages": len(plan.Pending), "summary_chars": len(st.Summary), "folded_turns": len(plan.Fold)}},
	}
	events = append(append(events, knowledge.events...), toolEvents...)
	return w.commit(ctx, log, job, plan, req.Summary, agent, ans, events, price)
}

// commit writes everything the turn decided in one transaction.
func (w *ReplyWorker) commit(ctx context.Context, log *slog.Logger, job *river.Job[jobargs.ReplyArgs],
	plan agents.Plan, summary string, agent agents.Agent, ans agents.Answer, events []store.Event, price int) (string, error) {
	a := job.Args
	tx, err := beginTurn(ctx, w.db)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit

	// Re-check under the conversation's lock: a message, a handoff or an
	// opt-out may have arrived while the agent was thinking. The reply is
	// written in the same round trip, and rolled back if the turn must not
	// answer after all. The price is the one the turn checked credits with.
	replyTo := a.MessageID
	start, err := store.StartReply(ctx, tx, store.Outbound{
		TenantID: a.TenantID, ConversationID: a.ConversationID, Author: store.AuthorBot, Body: ans.Text,
		ReplyToID: &replyTo, Agent: agent.Name, CreditsReserved: price,
		EventKind: "turn.reply", Event: map[string]any{
			"reply_to_id": a.MessageID, "agent": agent.Name, "handoff": ans.Handoff,
			"provider": ans.Usage.Provider, "model": ans.Usage.Model, "prompt_tokens": ans.Usage.PromptTokens,
			"completion_tokens": ans.Usage.CompletionTokens, "latency_ms": ans.Usage.LatencyMS,
		},
	}, events...)
	if err != nil {
		return "", err
	}
	if outcome, skipped, err := w.skipStarted(ctx, log, tx, a, start, events...); skipped {
		return outcome, err
	}
	replyID := start.ReplyID
	// Events decided after the reply was written (the turn's own went
	// into StartReply, before it): they follow it.
	commit := store.TurnCommit{
		TenantID: a.TenantID, ConversationID: a.ConversationID, InboundID: a.MessageID, ReplyID: replyID,
		Price: price, Handoff: ans.Handoff,
	}
	if len(plan.Fold) > 0 {
		commit.Summary = &store.SummaryUpdate{Text: summary, ThroughID: plan.FoldThroughID}
	}
	if ans.Handoff {
		commit.Events = append(commit.Events, store.Event{Kind: "turn.handoff", Detail: map[string]any{"agent": agent.Name, "reason": ans.HandoffReason}})
	}
	if err := queueReplySend(ctx, tx, job, replyID); err != nil {
		return "", err
	}
	_, err = store.CommitTurn(ctx, tx, commit)
	if errors.Is(err, store.ErrNoCredits) {
		_ = tx.Rollback(ctx)
		return w.skip(ctx, log, a, "turn.no_credits", "no_credits",
			map[string]any{"reason": "tenant ran out of credits during the turn", "reply_price": price, "after_llm": true}, events...)
	}
	if err != nil {
		return "", err
	}
	if w.beforeCommit != nil {
		if err := w.beforeCommit(ctx, tx); err != nil {
			return "", err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return "", fmt.Errorf("commit turn: %w", err)
	}
	log.Info("turn replied", "reply_message_id", replyID, "agent", agent.Name, "handoff", ans.Handoff)
	if ans.Handoff {
		return JobHandoff, nil
	}
	return JobCompleted, nil
}

// beginTurn begins a transaction that ends in queueReplySend, on generic
// plans. River's completion statement (JobCompleteTx) unnests arrays, so
// Postgres's plan cache always finds a custom plan cheaper than the generic
// one and plans it again on every call: 0.4 ms of Postgres CPU a turn, more
// than the statement's execution. The generic plan is the same index scan
// of river_job's primary key, planned once per connection and again after
// each ANALYZE of the table. The setting is SET LOCAL, sent with BEGIN in
// one round trip: it ends with the transaction, so nothing else on the
// connection runs on it.
func beginTurn(ctx context.Context, db DB) (pgx.Tx, error) {
	const genericPlans = "SET LOCAL plan_cache_mode = force_generic_plan"
	var tx pgx.Tx
	var err error
	if pool, ok := db.(interface {
		BeginTx(context.Context, pgx.TxOptions) (pgx.Tx, error)
	}); ok {
		tx, err = pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: "BEGIN; " + genericPlans})
	} else if tx, err = db.Begin(ctx); err == nil {
		// A transaction as db (the worker's tests): a savepoint in it, and
		// the setting for the rest of the enclosing transaction.
		if _, err = tx.Exec(ctx, genericPlans); err != nil {
			_ = tx.Rollback(ctx)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("begin turn: %w", err)
	}
	return tx, nil
}

// queueReplySend inserts the reply's conversa.send job and completes the
// turn's job, in the turn's transaction: every reply a turn writes (the
// bot's answer, a give-up notice) goes out through its own send job. The
// send job is due at once: its insert's NOTIFY wakes a send worker as the
// turn commits.
//
// Left to River's batched completer, the turn's job would cost one round
// trip less (bench figure 7), but a worker killed between the commit and
// the completer's next flush would leave it running until the rescuer
// takes it, up to the turn's timeout plus 30 s later (jobs.TurnTimeout),
// to find its reply written. Here the job ends with the turn.
func queueReplySend(ctx context.Context, tx pgx.Tx, job *river.Job[jobargs.ReplyArgs], replyID int64) error {
	client, err := river.ClientFromContextSafely[pgx.Tx](ctx)
	if err != nil {
		return fmt.Errorf("river client: %w", err)
	}
	if _, err := client.InsertTx(ctx, tx, jobargs.SendArgs{TenantID: job.Args.TenantID, MessageID: replyID}, nil); err != nil {
		return fmt.Errorf("insert send job: %w", err)
	}
	if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
		return fmt.Errorf("complete turn: %w", err)
	}
	return nil
}

// skip completes a turn that must not answer, recording why on the inbound
// message (with any events gathered before the decision).
func (w *ReplyWorker) skip(ctx context.Context, log *slog.Logger, a jobargs.ReplyArgs, kind, reason string, detail map[string]any, before ...store.Event) (string, error) {
	events := append(before, store.Event{Kind: kind, Detail: detail})
	if err := store.AddEvents(ctx, w.db, a.TenantID, a.MessageID, events...); err != nil {
		return "", err
	}
	log.Info("turn skipped", "reason", reason)
	return JobSkipped, nil
}

// memoryTurns turns stored messages up to the turn's closing message into
// the policy's turns. Later messages belong to a later turn. states says
// which attachments failed this turn (nil: none known).
func memoryTurns(stored []store.MemoryTurn, throughID int64, states attachmentStates) []agents.MemoryTurn {
	out := make([]agents.MemoryTurn, 0, len(stored))
	for _, m := range stored {
		if m.ID > throughID {
			break
		}
		text := m.Body
		if len(m.Media) > 0 || m.Transcript != nil {
			atts := make([]agents.Attachment, len(m.Media))
			for i, md := range m.Media {
				atts[i].ContentType = md.ContentType
				if st := states[m.ID]; i < len(st) {
					atts[i].State = st[i]
				}
			}
			text = agents.MessageText(m.Body, m.Transcript, atts)
		}
		out = append(out, agents.MemoryTurn{ID: m.ID, Turn: agents.Turn{Author: m.Author, Text: text, DuringHandoff: m.DuringHandoff}})
	}
	return out
}
