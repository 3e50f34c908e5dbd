package agents_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/store"
)

var faqAgent = agents.Agent{
	Name:  "assistant",
	Tools: []string{agents.ToolHandoff},
	FAQ: []agents.FAQ{
		{Keywords: []string{"hours", "open"}, Answer: "We open at nine."},
		{Keywords: []string{"price"}, Answer: "It costs ten."},
	},
}

func TestOfflineAnswers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name    string
		agent   agents.Agent
		pending []string
		text    string
		handoff bool
	}{
		{"faq", faqAgent, []string{"when are you open?"}, "We open at nine.", false},
		{"faq across a burst, each answer once", faqAgent, []string{"hours?", "and the price", "hours again"}, "We open at nine. It costs ten.", false},
		{"whole words only", faqAgent, []string{"chopen"}, agents.OfflineFallback, false},
		{"fallback", faqAgent, []string{"blue"}, agents.OfflineFallback, false},
		{"handoff", faqAgent, []string{"can I talk to a PERSON?"}, agents.HandoffNotice, true},
		{"no handoff without the tool", agents.Agent{Name: "x"}, []string{"human please"}, agents.OfflineFallback, false},
	}
	for _, tc := range tests {
		ans, err := agents.NewOffline().Reply(ctx, agents.Request{Agent: tc.agent, Pending: tc.pending})
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.text, ans.Text, tc.name)
		require.Equal(t, tc.handoff, ans.Handoff, tc.name)
		require.Equal(t, "offline", ans.Usage.Provider, tc.name)
		require.True(t, ans.Usage.Estimated, tc.name)
	}
}

func TestChooseOffline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	all := []agents.Agent{
		{Name: "sales", Keywords: []string{"buy", "quote"}},
		{Name: "assistant", IsDefault: true},
		{Name: "billing", Keywords: []string{"invoice", "refund"}},
	}
	a, r := agents.Choose(ctx, agents.NewOffline(), all, agents.Request{Pending: []string{"I need a refund for this invoice"}})
	require.Equal(t, "billing", a.Name)
	require.Equal(t, "keywords", r.By)
	a, r = agents.Choose(ctx, agents.NewOffline(), all, agents.Request{Pending: []string{"hello"}})
	require.Equal(t, "assistant", a.Name)
	require.Equal(t, "default", r.By)
	a, r = agents.Choose(ctx, agents.NewOffline(), all[:1], agents.Request{Pending: []string{"hello"}})
	require.Equal(t, "sales", a.Name)
	require.Equal(t, "single", r.By)
	a, r = agents.Choose(ctx, agents.NewOffline(), nil, agents.Request{})
	require.Equal(t, "assistant", a.Name)
	require.Equal(t, "default", r.By)
}

func TestPlanMemory(t *testing.T) {
	t.Parallel()
	cust := func(id int64, s string, handoff bool) agents.MemoryTurn {
		return agents.MemoryTurn{ID: id, Turn: agents.Turn{Author: store.AuthorContact, Text: s, DuringHandoff: handoff}}
	}
	turns := []agents.MemoryTurn{
		cust(1, "old question", false),
		{ID: 2, Turn: agents.Turn{Author: store.AuthorBot, Text: "old answer"}},
		cust(3, "to the person", true),
		{ID: 4, Turn: agents.Turn{Author: store.AuthorHuman, Text: "person answers"}},
		cust(5, "while still with the person", true),
		cust(6, "new one", false),
		cust(7, "and another", false),
	}
	p := agents.PlanMemory(turns)
	require.Equal(t, []string{"new one", "and another"}, p.Pending)
	require.Len(t, p.History, 5)
	require.True(t, p.History[4].DuringHandoff)
	require.Empty(t, p.Fold)

	var long []agents.MemoryTurn
	for i := range agents.MemoryTurns + 4 {
		long = append(long, cust(int64(2*i+1), "q", false), agents.MemoryTurn{ID: int64(2*i + 2), Turn: agents.Turn{Author: store.AuthorBot, Text: "a"}})
	}
	long = append(long, cust(1000, "latest", false))
	p = agents.PlanMemory(long)
	require.Len(t, p.History, agents.MemoryTurns)
	require.Len(t, p.Fold, len(long)-1-agents.MemoryTurns)
	require.EqualValues(t, len(p.Fold), p.FoldThroughID)
	require.Equal(t, []string{"latest"}, p.Pending)
}

func TestFoldSummaryIsBounded(t *testing.T) {
	t.Parallel()
	var s string
	for range 100 {
		s = agents.FoldSummary(s, []agents.Turn{{Author: store.AuthorContact, Text: strings.Repeat("word ", 100)}})
	}
	require.LessOrEqual(t, len(s), agents.SummaryMaxChars)
	require.True(t, strings.HasPrefix(s, "customer: word"))
}

func TestCleanReply(t *testing.T) {
	t.Parallel()
	require.Equal(t, "a b\nc", agents.CleanReply(" a\x00 b\nc\x1b "))
	require.Len(t, []rune(agents.CleanReply(strings.Repeat("é", 5000))), agents.MaxReplyChars)
}
