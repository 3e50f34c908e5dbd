package webhook

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/hook"
)

// Metrics are the HTTP edge's Prometheus metrics (docs/operations.md, "Metrics"), plus the
// registry GET /metrics serves. A nil *Metrics records nothing and serves no
// /metrics.
type Metrics struct {
	gatherer   prometheus.Gatherer
	webhooks   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	duplicates *prometheus.CounterVec
	api        *prometheus.CounterVec
}

// NewMetrics registers the edge's metrics and a queue-depth collector (River
// jobs by kind and state, read from db at each scrape) on reg, which /metrics
// then serves. The caller registers anything else on reg (jobs.NewMetrics,
// Go runtime and process collectors).
func NewMetrics(reg *prometheus.Registry, db store.DBTX) *Metrics {
	m := &Metrics{
		gatherer: reg,
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conversa_webhooks_total",
			Help: "Twilio webhooks answered, by hook (inbound, status), status class and outcome (ok, duplicate, bad_request, forbidden, too_large, unavailable).",
		}, []string{"hook", "code", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "conversa_webhook_latency_seconds",
			Help:    "Time to answer a Twilio webhook; for hook=inbound this is the ingest latency (receipt to committed message and turn job).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"hook"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conversa_webhook_duplicates_suppressed_total",
			Help: "Redelivered webhooks that changed nothing: inbound by MessageSid, status by (MessageSid, MessageStatus).",
		}, []string{"hook"}),
		api: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conversa_api_requests_total",
			Help: "Operator API requests, by method, route and status code.",
		}, []string{"method", "route", "code"}),
	}
	reg.MustRegister(m.webhooks, m.latency, m.duplicates, m.api,
		&queueCollector{db: db, kinds: []string{jobargs.ReplyArgs{}.Kind(), jobargs.SendArgs{}.Kind()}})
	return m
}

// handler serves the registry in Prometheus' format.
func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// observeWebhook counts each Twilio webhook by outcome and times it.
func (s *server) observeWebhook(c *gin.Context) {
	start := time.Now()
	c.Next()
	m := s.Metrics
	if m == nil {
		return
	}
	name := strings.TrimPrefix(c.FullPath(), "/twilio/")
	status := c.Writer.Status()
	outcome := hook.Outcome(c)
	if outcome == "" {
		outcome = statusOutcome(status)
	}
	if outcome == hook.OutcomeDuplicate {
		m.duplicates.WithLabelValues(name).Inc()
	}
	m.webhooks.WithLabelValues(name, strconv.Itoa(status/100)+"xx", outcome).Inc()
	m.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
}

func statusOutcome(status int) string {
	switch {
	case status < 300:
		return "ok"
	case status == http.StatusBadRequest:
		return "bad_request"
	case status == http.StatusForbidden:
		return "forbidden"
	case status == http.StatusRequestEntityTooLarge:
		return "too_large"
	case status >= 500:
		return "unavailable"
	default:
		return "other"
	}
}

// observeAPI counts operator API requests by route template (never ids).
func (s *server) observeAPI(c *gin.Context) {
	c.Next()
	if s.Metrics == nil {
		return
	}
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	s.Metrics.api.WithLabelValues(c.Request.Method, route, strconv.Itoa(c.Writer.Status())).Inc()
}

// queueCollector reports River's queue depth at scrape time, so it is right
// in every process, whichever one inserted or worked the jobs.
type queueCollector struct {
	db    store.DBTX
	kinds []string
}

var (
	queueJobsDesc = prometheus.NewDesc("conversa_queue_jobs",
		"River jobs by kind and state (completed jobs are not counted).", []string{"kind", "state"}, nil)
	queueOldestDesc = prometheus.NewDesc("conversa_queue_oldest_job_age_seconds",
		"Age of the longest-waiting job by kind and state, from its scheduled time; for available jobs, how far workers lag.", []string{"kind", "state"}, nil)
	queueUpDesc = prometheus.NewDesc("conversa_queue_depth_up",
		"1 when the queue depth could be read from Postgres at this scrape.", nil, nil)
)

// queueStates are reported for every known kind, as 0 when empty, so alerts
// see a series rather than its absence.
var queueStates = []string{"available", "scheduled", "retryable", "running", "discarded"}

// Describe implements prometheus.Collector.
func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueJobsDesc
	ch <- queueOldestDesc
	ch <- queueUpDesc
}

// Collect implements prometheus.Collector.
func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := store.QueueDepth(ctx, q.db)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(queueUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(queueUpDesc, prometheus.GaugeValue, 1)
	seen := map[[2]string]bool{}
	for _, c := range counts {
		seen[[2]string{c.Kind, c.State}] = true
		ch <- prometheus.MustNewConstMetric(queueJobsDesc, prometheus.GaugeValue, float64(c.Count), c.Kind, c.State)
		ch <- prometheus.MustNewConstMetric(queueOldestDesc, prometheus.GaugeValue, c.OldestSeconds, c.Kind, c.State)
	}
	for _, k := range q.kinds {
		for _, st := range queueStates {
			if !seen[[2]string{k, st}] {
				ch <- prometheus.MustNewConstMetric(queueJobsDesc, prometheus.GaugeValue, 0, k, st)
			}
		}
	}
}
