package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/conversa/conversa/internal/fakellm"
)

// llmLatency is the fake model's answer time in the LLM-bound figure.
const llmLatency = 2 * time.Second

// llmRun is one pass of the LLM-bound figure.
type llmRun struct {
	replies     int
	missing     int
	rate        float64       // replies per second between the first and the last reply
	p50         time.Duration // time to reply, median
	maxInFlight int64
}

// llmFigure: the same paced load (customers writing over the tenant's 10
// WhatsApp numbers) through the whole pipeline, first with the offline
// agent, then with an OpenAI-compatible model that takes 2 s a call (the
// fake in internal/fakellm). With turns bound by LLM_CONCURRENCY rather
// than a fixed worker count, the model should add its latency to each
// reply and take nothing off the throughput.
func (b *bench) llmFigure(ctx context.Context, r *report) error {
	rate := b.llmRate
	n := int(rate * 10)
	offline, err := b.llmPass(ctx, "offline agent", n, rate)
	if err != nil {
		return err
	}
	fake, err := fakellm.Start(fakellm.Options{Latency: llmLatency})
	if err != nil {
		return err
	}
	defer fake.Close()
	model, err := b.llmPass(ctx, "fake model at 2 s", n, rate,
		"LLM_PROVIDER=openai", "OPENAI_BASE_URL="+fake.URL(), "OPENAI_API_KEY=bench", "LLM_MODEL=fake-model")
	if err != nil {
		return err
	}
	model.maxInFlight = fake.MaxInFlight()
	ratio := 0.0
	if offline.rate > 0 {
		ratio = model.rate / offline.rate
	}
	row := func(x llmRun) string {
		return fmt.Sprintf("%.1f replies/s (%d of %d replied, %d missing after 120 s); median time to reply %s",
			x.rate, x.replies, n, x.missing, ms(x.p50))
	}
	r.add(fmt.Sprintf("6. LLM-bound throughput (%d customers at %.0f messages/s over %d WhatsApp numbers; LLM_CONCURRENCY default 256; DEBOUNCE=0)", n, rate, len(b.tenant.numbers)), [][2]string{
		{"offline agent", row(offline)},
		{"fake model answering in 2 s", row(model)},
		{"throughput ratio model/offline (goal ≥ 0.9)", fmt.Sprintf("%.2f", ratio)},
		{"median time to reply minus the model's 2 s (goal ≤ 300 ms)", ms(model.p50 - llmLatency)},
		{"the same minus the offline median (what the model path adds beyond its 2 s)", ms(model.p50 - llmLatency - offline.p50)},
		{"most LLM calls in flight (seen by the fake)", fmt.Sprintf("%d (%.0f/s × 2 s would need %.0f)", model.maxInFlight, rate, rate*llmLatency.Seconds())},
	})
	return nil
}

// llmPass runs the pipeline with env added and posts n messages at rate.
func (b *bench) llmPass(ctx context.Context, name string, n int, rate float64, env ...string) (llmRun, error) {
	var out llmRun
	if err := b.fresh(ctx); err != nil {
		return out, err
	}
	p, err := b.startPipeline(ctx, env...)
	if err != nil {
		return out, err
	}
	defer p.stop()
	s := newSender(p.base, p.base, b.tenant)
	fmt.Printf("llm: %s, %d messages at %.0f/s ...\n", name, n, rate)
	sent, err := paced(ctx, s, n, rate)
	if err != nil {
		return out, err
	}
	out.replies = p.waitReplies(n, 120*time.Second)
	var lat []time.Duration
	lat, out.missing = latencies(sent, p.replyTimes())
	out.p50 = percentiles(lat)[50]
	var times []time.Time
	for _, m := range p.fake.Accepted("") {
		times = append(times, m.Created)
	}
	if len(times) > 1 {
		first, last := slices.MinFunc(times, time.Time.Compare), slices.MaxFunc(times, time.Time.Compare)
		// Between the first reply and the last: the model's fixed delay
		// shifts both, so it does not count against the throughput.
		out.rate = float64(len(times)-1) / last.Sub(first).Seconds()
	}
	return out, nil
}
