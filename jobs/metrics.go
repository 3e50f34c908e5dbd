package jobs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the pipeline metrics the workers record (docs/operations.md,
// "Metrics"); jobs by kind and outcome are JobMetricsMiddleware's. A nil
// *Metrics records nothing, so tests need not build one.
type Metrics struct {
	llmLatency    *prometheus.HistogramVec
	llmTokens     *prometheus.CounterVec
	twilioSends   *prometheus.CounterVec
	inboundToSent prometheus.Histogram
	duplicates    *prometheus.CounterVec
	gaveUp        *prometheus.CounterVec
	toolCalls     *prometheus.CounterVec
	toolLatency   prometheus.Histogram
	events        *prometheus.CounterVec
	eventLag      prometheus.Histogram
	maintenanceMetrics
}

// NewMetrics registers the worker metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		llmLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "conversa_llm_latency_seconds", Help: "LLM call latency.",
			Buckets: []float64{.001, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"provider", "model"}),
		llmTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conversa_llm_tokens_total", Help: "LLM tokens used, by direction (prompt, completion).",
		}, []string{"provider", "model", "direction"}),
		twilioSends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conversa_twilio_sends_total", Help: "Twilio send attempts, by outcome class (accepted, retry, permanent, ambiguous).",
		}, []string{"class"}),
		inboundToSent: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "conversa_inbound_to_reply_sent_seconds", Help: "Time from an inbound message to its reply being accepted by Twilio.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conversa_duplicates_suppressed_total", Help: "Duplicates suppressed, by where (reply, send, status).",
		}, []string{"where"}),
		gaveUp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conversa_turns_gave_up_total", Help: "Turns the bot gave up on and handed to a person, by reason (rate_limited, outage, llm_failed).",
		}, []string{"reason"}),
		toolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conversa_tool_calls_total", Help: "HTTP tool calls made, by outcome (ok, timeout, http_error, bad_answer, network, refused, unknown_tool, bad_arguments).",
		}, []string{"outcome"}),
		toolLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "conversa_tool_call_duration_seconds", Help: "HTTP tool call latency, from the POST to the whole answer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conversa_event_deliveries_total", Help: "Event webhook POSTs, by event type and outcome (delivered, failed).",
		}, []string{"type", "outcome"}),
		eventLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "conversa_event_delivery_lag_seconds", Help: "Time from an event's change committing to its receiver's 2xx.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}),
	}
	reg.MustRegister(m.llmLatency, m.llmTokens, m.twilioSends, m.inboundToSent, m.duplicates, m.gaveUp, m.toolCalls, m.toolLatency,
		m.events, m.eventLag)
	m.maintenanceMetrics = newMaintenanceMetrics(reg)
	return m
}

// LLM records one LLM call.
func (m *Metrics) LLM(provider, model string, latency time.Duration, promptTokens, completionTokens int64) {
	if m == nil {
		return
	}
	m.llmLatency.WithLabelValues(provider, model).Observe(latency.Seconds())
	m.llmTokens.WithLabelValues(provider, model, "prompt").Add(float64(promptTokens))
	m.llmTokens.WithLabelValues(provider, model, "completion").Add(float64(completionTokens))
}

// TwilioSend counts one send attempt by class.
func (m *Metrics) TwilioSend(class string) {
	if m != nil {
		m.twilioSends.WithLabelValues(class).Inc()
	}
}

// ReplySent records the time from the inbound message to its reply's acceptance.
func (m *Metrics) ReplySent(d time.Duration) {
	if m != nil {
		m.inboundToSent.Observe(d.Seconds())
	}
}

// Duplicate counts one suppressed duplicate.
func (m *Metrics) Duplicate(where string) {
	if m != nil {
		m.duplicates.WithLabelValues(where).Inc()
	}
}

// GaveUp counts one turn handed to a person because the LLM could not answer.
func (m *Metrics) GaveUp(reason string) {
	if m != nil {
		m.gaveUp.WithLabelValues(reason).Inc()
	}
}

// ToolCall records one HTTP tool call by outcome.
func (m *Metrics) ToolCall(outcome string, latency time.Duration) {
	if m != nil {
		m.toolCalls.WithLabelValues(outcome).Inc()
		m.toolLatency.Observe(latency.Seconds())
	}
}

// EventDelivery records one event POST; lag is from the event's creation
// to now, observed when it was delivered.
func (m *Metrics) EventDelivery(typ string, delivered bool, lag time.Duration) {
	if m == nil {
		return
	}
	outcome := "failed"
	if delivered {
		outcome = "delivered"
		m.eventLag.Observe(lag.Seconds())
	}
	m.events.WithLabelValues(typ, outcome).Inc()
}
