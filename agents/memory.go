package agents

import (
	"strings"
	"unicode/utf8"

	"github.com/conversa/conversa/store"
)

// Memory policy. The agent sees the conversation's running summary, then the
// last MemoryTurns turns verbatim, then the messages it must answer. Older
// turns are folded into the summary, which lives in Postgres
// (conversations.summary); the recent turns are cached in Redis by store.
const (
	// MemoryTurns is how many past turns the agent sees verbatim.
	MemoryTurns = 12
	// MemoryWindow is how many turns after the summary store loads: the
	// verbatim turns plus room for a long burst and for what is to be folded.
	MemoryWindow = 40
	// SummaryMaxChars bounds the running summary; its oldest lines go first.
	SummaryMaxChars = 2000
	// summaryLineChars bounds what one folded turn adds to the summary.
	summaryLineChars = 160
)

// MemoryTurn is a stored turn as the policy sees it.
type MemoryTurn struct {
	ID int64
	Turn
}

// Plan is how a turn's memory is laid out for the agent.
type Plan struct {
	// History is what the agent sees verbatim before Pending.
	History []Turn
	// Pending is the burst to answer: the customer's messages since the bot
	// or a person last spoke, without those that arrived during a handoff
	// (those are context; the bot never answers them).
	Pending []string
	// PendingIDs are the ids of Pending's messages, in the same order.
	PendingIDs []int64
	// Fold are turns too old for History, to fold into the summary;
	// FoldThroughID is the newest of them (0 when none).
	Fold          []Turn
	FoldThroughID int64
}

// PlanMemory splits the turns after the summary (oldest first) into history,
// the pending burst, and what to fold into the summary.
func PlanMemory(turns []MemoryTurn) Plan {
	var p Plan
	cut := len(turns)
	for cut > 0 {
		t := turns[cut-1]
		if t.Author != store.AuthorContact {
			break
		}
		cut--
	}
	var context []MemoryTurn
	context = append(context, turns[:cut]...)
	for _, t := range turns[cut:] {
		if t.DuringHandoff {
			context = append(context, t)
			continue
		}
		p.Pending = append(p.Pending, t.Text)
		p.PendingIDs = append(p.PendingIDs, t.ID)
	}
	if n := len(context) - MemoryTurns; n > 0 {
		for _, t := range context[:n] {
			p.Fold = append(p.Fold, t.Turn)
		}
		p.FoldThroughID = context[n-1].ID
		context = context[n:]
	}
	for _, t := range context {
		p.History = append(p.History, t.Turn)
	}
	return p
}

// FoldSummary appends turns to a running summary, one short line each, and
// keeps the newest SummaryMaxChars. It is extractive and deterministic, so a
// turn costs no extra LLM call; a provider-written summary can replace it
// without changing where the summary is stored.
func FoldSummary(summary string, turns []Turn) string {
	var b strings.Builder
	b.WriteString(summary)
	for _, t := range turns {
		text := strings.Join(strings.Fields(t.Text), " ")
		if text == "" {
			continue
		}
		if utf8.RuneCountInString(text) > summaryLineChars {
			text = string([]rune(text)[:summaryLineChars-1]) + "…"
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(label(t))
		b.WriteString(": ")
		b.WriteString(text)
	}
	s := b.String()
	for len(s) > SummaryMaxChars {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			s = string([]rune(s)[utf8.RuneCountInString(s)-SummaryMaxChars/4:])
			break
		}
		s = s[i+1:]
	}
	return s
}

// label names a turn's author for the model.
func label(t Turn) string {
	switch {
	case t.Author == store.AuthorContact && t.DuringHandoff:
		return "customer (to a person)"
	case t.Author == store.AuthorContact:
		return "customer"
	case t.Author == store.AuthorHuman:
		return "person from the team"
	default:
		return string(t.Author)
	}
}
