package jobs_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/fakellm"
)

// BenchmarkTurnToolRounds is a turn's latency against a model that takes
// 2 s a call, with 0, 1 and 2 rounds of tool calls (each round is one more
// model call plus the tool's POST and its two records). make bench runs it;
// it reports ms per turn, and asserts nothing about time.
func BenchmarkTurnToolRounds(b *testing.B) {
	for _, rounds := range []int{0, 1, 2} {
		b.Run(fmt.Sprintf("rounds=%d", rounds), func(b *testing.B) {
			fake, err := fakellm.Start(fakellm.Options{Latency: 2 * time.Second})
			require.NoError(b, err)
			b.Cleanup(fake.Close)
			if rounds > 0 {
				fake.ToolRoundsOn("book", rounds, fakellm.ToolCall{Name: "book", Arguments: `{"day":"tuesday"}`})
			}
			p, err := agents.NewOpenAI(agents.OpenAIConfig{BaseURL: fake.URL(), APIKey: "sk-test", Model: "fake-model"})
			require.NoError(b, err)
			e := newToolEnv(b, p, nil)
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				in := e.inbound("please book me in")
				b.StartTimer()
				require.NoError(b, e.try(in))
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/turn")
		})
	}
}
