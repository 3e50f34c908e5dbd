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
// River works in conversa_jobs_total, by kind and outcome (the Job* outcomes
// below), and times the work. It sees every worker; a worker whose job
// completes may say more of how it ended (noteOutcome).
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
			Name: "conversa_jobs_total",
			Help: "Jobs worked, by kind and outcome (completed, handoff, skipped, failed, retry, snoozed, cancelled, discarded, panic).",
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
	var noted string
	defer func() {
		outcome := jobOutcome(job, err)
		if outcome == JobCompleted && noted != "" {
			outcome = noted
		}
		if panicked {
			// River recovers the panic and records it; count it and let it go on.
			outcome = JobPanic
		}
		m.worked.WithLabelValues(job.Kind, outcome).Inc()
		m.duration.WithLabelValues(job.Kind).Observe(time.Since(start).Seconds())
	}()
	err = doInner(context.WithValue(ctx, outcomeKey{}, &noted))
	panicked = false
	return err
}

// Job outcomes, as conversa_jobs_total labels them: what River does with the
// job next, and for a job that completed, how it ended when its worker says
// (noteOutcome).
const (
	JobCompleted = "completed" // done, with its effect
	JobHandoff   = "handoff"   // completed: a turn that handed the conversation to a person
	JobSkipped   = "skipped"   // completed: nothing to do (duplicate, superseded, not the bot's)
	JobFailed    = "failed"    // completed: the message ended failed, nothing left to try
	JobRetry     = "retry"     // River retries it with backoff
	JobSnoozed   = "snoozed"   // comes back later without using an attempt
	JobCancelled = "cancelled" // never again
	JobDiscarded = "discarded" // out of attempts
	JobPanic     = "panic"     // the worker panicked (River records it and retries)
)

// outcomeKey holds, in a worked job's context, where its worker notes how
// it ended.
type outcomeKey struct{}

// noteOutcome says how a job ended when it completes (JobHandoff,
// JobSkipped, JobFailed; JobCompleted or "" for nothing more). It counts
// only if the job completes: a job that is retried, snoozed, cancelled or
// discarded counts as that, whatever its worker noted.
func noteOutcome(ctx context.Context, outcome string) {
	if p, ok := ctx.Value(outcomeKey{}).(*string); ok {
		*p = outcome
	}
}

// jobOutcome is what River does with a job after its worker returned err.
func jobOutcome(job *rivertype.JobRow, err error) string {
	var cancel *rivertype.JobCancelError
	var snooze *rivertype.JobSnoozeError
	switch {
	case err == nil:
		return JobCompleted
	case errors.As(err, &cancel):
		return JobCancelled
	case errors.As(err, &snooze):
		return JobSnoozed
	case job.Attempt >= job.MaxAttempts:
		return JobDiscarded
	default:
		return JobRetry
	}
}
