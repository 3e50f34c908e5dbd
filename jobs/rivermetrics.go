package jobs

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// JobMetricsMiddleware is River worker middleware that counts every job
// River works, by kind and by what River does next (completed, retry,
// discarded, cancelled, snoozed, panic), and times the work. It sees every
// worker, including ones that record nothing themselves; Metrics.Job is the
// workers' own, finer account (skipped, superseded, ...).
type JobMetricsMiddleware struct {
	river.MiddlewareDefaults
	worked   *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewJobMetricsMiddleware registers the River job metrics on reg. Add the
// result to river.Config.Middleware.
func NewJobMetricsMiddleware(reg prometheus.Registerer) *JobMetricsMiddleware {
	m := &JobMetricsMiddleware{
		worked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conversa_river_jobs_total",
			Help: "Jobs River worked, by kind and outcome (completed, retry, discarded, cancelled, snoozed, panic).",
		}, []string{"kind", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "conversa_river_job_duration_seconds",
			Help:    "Time a job's worker ran, by kind.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"kind"}),
	}
	reg.MustRegister(m.worked, m.duration)
	return m
}

// Work implements rivertype.WorkerMiddleware.
func (m *JobMetricsMiddleware) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) (err error) {
	start := time.Now()
	panicked := true
	defer func() {
		outcome := jobOutcome(job, err)
		if panicked {
			// River recovers the panic and records it; count it and let it go on.
			outcome = "panic"
		}
		m.worked.WithLabelValues(job.Kind, outcome).Inc()
		m.duration.WithLabelValues(job.Kind).Observe(time.Since(start).Seconds())
	}()
	err = doInner(ctx)
	panicked = false
	return err
}

// jobOutcome is what River does with a job after its worker returned err.
func jobOutcome(job *rivertype.JobRow, err error) string {
	var cancel *rivertype.JobCancelError
	var snooze *rivertype.JobSnoozeError
	switch {
	case err == nil:
		return "completed"
	case errors.As(err, &cancel):
		return "cancelled"
	case errors.As(err, &snooze):
		return "snoozed"
	case job.Attempt >= job.MaxAttempts:
		return "discarded"
	default:
		return "retry"
	}
}
