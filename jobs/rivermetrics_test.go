package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/jobs"
)

func TestJobMetricsMiddlewareCountsOutcomes(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := jobs.NewJobMetricsMiddleware(reg)
	ctx := context.Background()
	work := func(attempt int, err error) {
		job := &rivertype.JobRow{Kind: "conversa.send", Attempt: attempt, MaxAttempts: 3}
		got := m.Work(ctx, job, func(context.Context) error { return err })
		require.Equal(t, err, got, "the worker's error goes on to River unchanged")
	}
	work(1, nil)
	work(1, errors.New("twilio 503"))
	work(3, errors.New("twilio 503"))
	work(1, river.JobCancel(errors.New("21211 invalid To")))
	work(1, river.JobSnooze(time.Second))
	require.Panics(t, func() {
		_ = m.Work(ctx, &rivertype.JobRow{Kind: "conversa.reply", Attempt: 1, MaxAttempts: 3}, func(context.Context) error { panic("boom") })
	})

	// A worker may say how a completed job ended; a job River retries
	// counts as a retry whatever its worker said.
	noted := func(outcome string, err error) {
		job := &rivertype.JobRow{Kind: "conversa.send", Attempt: 1, MaxAttempts: 3}
		_ = m.Work(ctx, job, func(ctx context.Context) error { jobs.NoteOutcome(ctx, outcome); return err })
	}
	noted(jobs.JobSkipped, nil)
	noted(jobs.JobFailed, nil)
	noted(jobs.JobFailed, errors.New("store down"))

	for outcome, want := range map[string]float64{"completed": 1, "retry": 2, "discarded": 1, "cancelled": 1, "snoozed": 1, "skipped": 1, "failed": 1} {
		require.InDelta(t, want, counter(t, reg, "conversa.send", outcome), 0, outcome)
	}
	require.InDelta(t, 1, counter(t, reg, "conversa.reply", "panic"), 0)
}

// counter reads conversa_jobs_total{kind,outcome} from reg.
func counter(t *testing.T, reg *prometheus.Registry, kind, outcome string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != "conversa_jobs_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kind && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no conversa_jobs_total{kind=%q,outcome=%q}", kind, outcome)
	return 0
}
