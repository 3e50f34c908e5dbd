package agents

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/conversa/conversa/store"
)

// ToolHandoff is the tool an agent calls to hand the conversation to a person.
const ToolHandoff = "handoff_to_human"

// MaxReplyChars bounds a reply: Twilio takes at most 1,600 characters in an
// SMS body (WhatsApp allows more, but a chat reply that long is a bug).
const MaxReplyChars = 1600

// HandoffNotice is what the bot says when it hands a conversation to a person
// and the model gave no text of its own: the customer should know someone
// will answer, rather than meet silence.
const HandoffNotice = "I'm connecting you with a person from our team; they will reply here shortly."

// FAQ is one offline answer: any keyword found in the customer's words
// selects the answer. It is the stored type: one vocabulary for both.
type FAQ = store.FAQEntry

// Agent is one of a tenant's agents, as store keeps it (store.Agent: its
// prompt, model, tools, keywords, FAQ, vision and fallback notice); this
// package reads it and never copies it into a type of its own.
type Agent = store.Agent

// DefaultFallbackMessage is the notice of an agent with no fallback_message.
const DefaultFallbackMessage = "Sorry, we can't answer right now. A person from our team will get back to you."

// Fallback is the notice the customer gets from a when the bot gives up.
func Fallback(a Agent) string {
	if s := CleanReply(a.FallbackMessage); s != "" {
		return s
	}
	return DefaultFallbackMessage
}

// CanHandoff reports whether agent a may hand the conversation to a person.
func CanHandoff(a Agent) bool {
	for _, t := range a.Tools {
		if t == ToolHandoff {
			return true
		}
	}
	return false
}

// Turn is one past message of the conversation.
type Turn struct {
	// Author is who wrote it: the customer (store.AuthorContact), the bot,
	// or a person from the business answering during a handoff.
	Author store.Author
	Text   string
	// DuringHandoff marks a customer message that arrived while a person
	// handled the conversation: context for the agent, not something to answer.
	DuringHandoff bool
}

// Request is everything an agent needs to answer one turn.
type Request struct {
	Agent Agent
	// Summary condenses the conversation before History.
	Summary string
	// Images are the pending messages' images as data URLs, for an agent
	// with Vision (see MessageText for what the text says).
	Images []string
	// History is the recent conversation before the messages to answer.
	History []Turn
	// Pending are the customer's messages this turn answers, oldest first:
	// the whole burst since the bot or a person last spoke.
	Pending []string
	// CurrentAgent is the agent that answered the conversation last ("" for
	// none): the routing agent keeps it unless a keyword points elsewhere.
	CurrentAgent string
	// Knowledge are the passages of the tenant's documents found for
	// Pending, best first.
	Knowledge []store.Passage
	// ToolRounds are this turn's tool calls so far and their results, in
	// order: the agent goes on from them (tools.go).
	ToolRounds []ToolRound
}

// Usage is what one provider call cost and took.
type Usage struct {
	Provider         string `json:"provider"`
	Model            string `json:"model"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	// Estimated is true when the provider counted no tokens (offline).
	Estimated bool          `json:"estimated,omitempty"`
	Latency   time.Duration `json:"-"`
	LatencyMS int64         `json:"latency_ms"`
	Attempts  int           `json:"attempts,omitempty"`
}

// Answer is an agent's decision for one turn.
type Answer struct {
	// ToolCalls, when not empty, are HTTP tools the agent wants called
	// before it answers; Text is then empty (tools.go).
	ToolCalls []ToolCall
	// Text is the reply to send, already bounded and cleaned.
	Text string
	// Handoff is set when the agent called ToolHandoff.
	Handoff       bool
	HandoffReason string
	Usage         Usage
}

// Provider is an LLM backend: it answers as an agent and classifies a
// message for the routing agent.
type Provider interface {
	// Name is "offline" or "openai".
	Name() string
	// Reply answers the pending messages as req.Agent.
	Reply(ctx context.Context, req Request) (Answer, error)
	// Classify picks one of agents (by name) for the pending messages and
	// says why. An empty name means "no opinion": the keyword rules decide.
	Classify(ctx context.Context, agents []Agent, req Request) (name, reason string, usage Usage, err error)
}

// CleanReply makes model output sendable: valid UTF-8, no NUL or other
// control characters except newlines and tabs, trimmed, at most MaxReplyChars.
func CleanReply(s string) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > MaxReplyChars {
		r := []rune(s)
		s = strings.TrimSpace(string(r[:MaxReplyChars-1])) + "…"
	}
	return s
}

// estimateTokens is the usual four-characters-a-token rule of thumb.
func estimateTokens(parts ...string) int64 {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	return int64((n + 3) / 4)
}
