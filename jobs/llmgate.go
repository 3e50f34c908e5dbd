package jobs

import (
	"errors"
	"github.com/conversa/conversa/jobs/jobargs"
	"math/rand/v2"
	"time"

	"github.com/riverqueue/river"

	"github.com/conversa/conversa/agents"
)

// Defaults of the LLM settings (LLM_TIMEOUT, LLM_GIVE_UP; see README,
// "A real LLM").
const (
	DefaultLLMTimeout = 60 * time.Second
	DefaultLLMGiveUp  = 15 * time.Minute
)

// TurnTimeout is the conversa.reply job's timeout for an LLM_TIMEOUT of
// llmTimeout: the media stage (at most DefaultMediaTimeout), the routing
// classifier's call (at most agents.ClassifyTimeout), the agent's call, and
// 5 s for the turn's reads and its commit. River's
// stuck-job rescuer honours a worker's own timeout, so a crashed turn is
// retried once this has passed since it started, at the rescuer's next run
// (every 30 s): within LLM_TIMEOUT + 60 s.
func TurnTimeout(llmTimeout time.Duration) time.Duration {
	if llmTimeout <= 0 {
		llmTimeout = DefaultLLMTimeout
	}
	return DefaultMediaTimeout + llmTimeout + min(llmTimeout, agents.ClassifyTimeout) + 5*time.Second
}

// Timeout implements river.Worker: see TurnTimeout.
func (w *ReplyWorker) Timeout(*river.Job[jobargs.ReplyArgs]) time.Duration {
	return TurnTimeout(w.llmTimeout)
}

// providerVerdict is what a turn does after its agent's call failed.
type providerVerdict int

const (
	// verdictRetry: an ordinary error; River retries the turn (an attempt).
	verdictRetry providerVerdict = iota
	// verdictWait: the provider is rate limited or down; the turn is
	// snoozed (no attempt used) until the shared back-off ends.
	verdictWait
	// verdictGiveUp: the bot stops trying and hands the conversation to a person.
	verdictGiveUp
)

// judgeProviderError decides what a failed agent call means for the turn.
// age is how long ago the customer's message arrived. A provider that is
// unavailable is waited for until LLM_GIVE_UP after that message, the last
// wait ending at the deadline so the bot tries once more before it gives up;
// any other LLM error is retried like any failure, and on the turn's last
// attempt it gives up too, so the customer never meets silence.
func (w *ReplyWorker) judgeProviderError(err error, age time.Duration, attempt, maxAttempts int) (providerVerdict, time.Duration, string) {
	var ue *agents.UnavailableError
	if !errors.As(err, &ue) {
		if attempt >= maxAttempts {
			return verdictGiveUp, 0, "llm_failed"
		}
		return verdictRetry, 0, ""
	}
	remaining := w.giveUp - age
	if remaining <= 0 {
		return verdictGiveUp, 0, ue.Reason
	}
	// Spread the waiting turns out a little, so they do not all come back
	// in the same instant the back-off ends.
	wait := ue.Wait + rand.N(ue.Wait/5+time.Millisecond)
	return verdictWait, min(wait, remaining), ue.Reason
}
