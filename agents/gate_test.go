package agents_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/fakellm"
)

func fakeProvider(t *testing.T, opts fakellm.Options, cfg agents.OpenAIConfig) (*fakellm.Server, *agents.OpenAI) {
	t.Helper()
	f, err := fakellm.Start(opts)
	require.NoError(t, err)
	t.Cleanup(f.Close)
	cfg.BaseURL, cfg.APIKey, cfg.Model = f.URL(), "sk-test", "fake-model"
	p, err := agents.NewOpenAI(cfg)
	require.NoError(t, err)
	return f, p
}

// parallel runs n calls at once and returns their errors.
func parallel(n int, call func() error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = call() })
	}
	wg.Wait()
	return errs
}

func TestGateSharesOneRateLimitBackoff(t *testing.T) {
	t.Parallel()
	f, p := fakeProvider(t, fakellm.Options{}, agents.OpenAIConfig{})
	g := agents.NewGate(p, agents.GateConfig{Concurrency: 4})
	f.Inject(fakellm.Fault{Kind: fakellm.FaultRateLimit, RetryAfter: 700 * time.Millisecond})

	errs := parallel(40, func() error { _, err := g.Reply(context.Background(), request()); return err })
	for _, err := range errs {
		var ue *agents.UnavailableError
		require.ErrorAs(t, err, &ue)
		require.Equal(t, agents.ReasonRateLimited, ue.Reason)
		require.Positive(t, ue.Wait)
	}
	// Only the calls already on their way when the first 429 came back
	// reached the provider: the rest waited on the shared back-off.
	require.LessOrEqual(t, f.Calls(), int64(4))

	f.Clear()
	require.Eventually(t, func() bool {
		_, err := g.Reply(context.Background(), request())
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
	require.LessOrEqual(t, f.Calls(), int64(5), "while held, no call reached the provider")
}

func TestGateBacksOffAfterARunOfFailures(t *testing.T) {
	t.Parallel()
	f, p := fakeProvider(t, fakellm.Options{}, agents.OpenAIConfig{MaxRetries: -1})
	g := agents.NewGate(p, agents.GateConfig{Failures: 3, OpenFor: 300 * time.Millisecond})
	f.Inject(fakellm.Fault{Kind: fakellm.FaultServerError})

	for i := range 10 {
		_, err := g.Reply(context.Background(), request())
		var ue *agents.UnavailableError
		require.ErrorAs(t, err, &ue, "call %d", i)
		require.Equal(t, agents.ReasonOutage, ue.Reason)
		require.Positive(t, ue.Wait)
	}
	require.EqualValues(t, 3, f.Calls(), "after three failures in a row the gate stops calling")

	// Recovery: one probe at a time finds the provider back.
	f.Clear()
	require.Eventually(t, func() bool {
		_, err := g.Reply(context.Background(), request())
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
	require.LessOrEqual(t, f.Calls(), int64(3+1+5), "probes only, no storm")
	_, err := g.Reply(context.Background(), request())
	require.NoError(t, err, "closed again after a probe succeeded")
}

func TestGateBoundsCallsInFlight(t *testing.T) {
	t.Parallel()
	f, p := fakeProvider(t, fakellm.Options{Latency: 50 * time.Millisecond}, agents.OpenAIConfig{})
	g := agents.NewGate(p, agents.GateConfig{Concurrency: 3})

	errs := parallel(15, func() error { _, err := g.Reply(context.Background(), request()); return err })
	require.NoError(t, errors.Join(errs...), "calls past the bound wait, they do not fail")
	require.EqualValues(t, 15, f.Answered())
	require.LessOrEqual(t, f.MaxInFlight(), int64(3))
	require.LessOrEqual(t, g.MaxInFlight(), int64(3))
}

func TestGateLetsOrdinaryErrorsThrough(t *testing.T) {
	t.Parallel()
	f, p := fakeProvider(t, fakellm.Options{}, agents.OpenAIConfig{Timeout: 200 * time.Millisecond, MaxRetries: -1})
	g := agents.NewGate(p, agents.GateConfig{Failures: 2, OpenFor: time.Minute})

	// A hang is cut by the timeout and counts as the provider failing.
	f.Inject(fakellm.Fault{Kind: fakellm.FaultHang, Times: 1})
	_, err := g.Reply(context.Background(), request())
	var ue *agents.UnavailableError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, "timeout", agents.ErrorClass(ue.Err))

	// A turn that is itself stopped says nothing about the provider.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = g.Reply(ctx, request())
	require.ErrorIs(t, err, context.Canceled)
	_, err = g.Reply(context.Background(), request())
	require.NoError(t, err, "one failure is not a run")
}

func TestFakeAnswersWithToolCalls(t *testing.T) {
	t.Parallel()
	f, p := fakeProvider(t, fakellm.Options{}, agents.OpenAIConfig{})
	f.ToolCallsOn("person", fakellm.ToolCall{Name: agents.ToolHandoff, Arguments: `{"reason":"asked for a person"}`})

	ans, err := p.Reply(context.Background(), agents.Request{Agent: support, Pending: []string{"a person please"}})
	require.NoError(t, err)
	require.True(t, ans.Handoff)
	require.Equal(t, "asked for a person", ans.HandoffReason)
	ans, err = p.Reply(context.Background(), agents.Request{Agent: support, Pending: []string{"what time is it"}})
	require.NoError(t, err)
	require.Equal(t, "Fake answer to: what time is it", ans.Text)
}
