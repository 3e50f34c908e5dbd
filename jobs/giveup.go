package jobs

import (
	"context"
	"fmt"
	"github.com/conversa/conversa/jobs/jobargs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/store"
)

// handOver ends a turn the LLM could not answer: the customer gets one notice
// (the agent's fallback message) and the conversation goes to a person. In
// one transaction, under the conversation's lock: the notice as the turn's
// reply (unique per turn, like any reply, so a retried give-up writes no
// second notice), the status "human", the turn.gave_up and turn.handoff
// trace events, the turn.gave_up and conversation.handoff webhook events, the notice's conversa.send job (the same send path as every
// reply) and the turn job's completion. The notice costs no credits: no
// model answered. A turn that must not answer any more (a newer message, a
// person took over, STOP) skips instead, as after any LLM call.
func (w *ReplyWorker) handOver(ctx context.Context, log *slog.Logger, job *river.Job[jobargs.ReplyArgs], agent agents.Agent, reason string, age time.Duration, callErr error) (string, error) {
	a := job.Args
	detail := map[string]any{
		"reason": reason, "agent": agent.Name, "attempt": job.Attempt,
		"waited_s": int64(age.Seconds()), "give_up_after_s": int64(w.giveUp.Seconds()),
	}
	if callErr != nil {
		detail["error"] = agents.ErrorClass(callErr)
	}
	tx, err := beginTurn(ctx, w.db)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit

	replyTo := a.MessageID
	start, err := store.StartReply(ctx, tx, store.Outbound{
		TenantID: a.TenantID, ConversationID: a.ConversationID, Author: store.AuthorBot, Body: agents.Fallback(agent),
		ReplyToID: &replyTo, Agent: agent.Name,
		EventKind: "turn.fallback", Event: map[string]any{"reply_to_id": a.MessageID, "agent": agent.Name, "reason": reason},
	})
	if err != nil {
		return "", err
	}
	if outcome, skipped, err := w.skipStarted(ctx, log, tx, a, start); skipped {
		return outcome, err
	}
	if _, err := store.SetConversationStatus(ctx, tx, a.TenantID, a.ConversationID, store.ConversationHuman, store.HandoffGaveUp); err != nil {
		return "", err
	}
	if err := store.RecordEvent(ctx, tx, store.NewEvent{TenantID: a.TenantID, Type: store.EventTurnGaveUp,
		MessageID: a.MessageID, ConversationID: a.ConversationID, Data: map[string]any{"reason": reason}}); err != nil {
		return "", err
	}
	detail["notice_message_id"] = start.ReplyID
	if err := store.AddEvents(ctx, tx, a.TenantID, a.MessageID,
		store.Event{Kind: "turn.gave_up", Detail: detail},
		store.Event{Kind: "turn.handoff", Detail: map[string]any{"agent": agent.Name, "reason": "the LLM could not answer (" + reason + ")"}},
	); err != nil {
		return "", err
	}
	if err := queueReplySend(ctx, tx, job, start.ReplyID); err != nil {
		return "", err
	}
	if err := tx.Commit(ctx); err != nil {
		return "", fmt.Errorf("commit give-up: %w", err)
	}
	w.metrics.GaveUp(reason)
	log.Warn("turn gave up: conversation handed to a person", "reason", reason, "notice_message_id", start.ReplyID, "agent", agent.Name)
	return "gave_up", nil
}

// skipStarted rolls back a started reply (a bot reply or a give-up notice)
// that must not go out: the turn may no longer answer (a newer message, a
// person took over, STOP, all seen under the conversation's lock), or it
// already has its reply. skipped is false when the reply may go on.
func (w *ReplyWorker) skipStarted(ctx context.Context, log *slog.Logger, tx pgx.Tx, a jobargs.ReplyArgs, start store.ReplyStart, events ...store.Event) (string, bool, error) {
	if reason, detail := skipReason(start.State, a.MessageID); reason != "" {
		_ = tx.Rollback(ctx)
		detail["after_llm"] = true
		outcome, err := w.skip(ctx, log, a, "turn.skipped", reason, detail, events...)
		return outcome, true, err
	}
	if start.ReplyID == 0 {
		_ = tx.Rollback(ctx)
		w.metrics.Duplicate("reply")
		outcome, err := w.skip(ctx, log, a, "turn.duplicate", "duplicate",
			map[string]any{"reason": "this turn already has its reply; no second reply written"})
		return outcome, true, err
	}
	return "", false, nil
}
