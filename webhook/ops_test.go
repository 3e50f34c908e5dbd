package webhook_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/webhook"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

func TestRiverUIRequiresAdmin(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 0)

	for _, path := range []string{"/riverui/", "/riverui/jobs", "/riverui/api/jobs?state=available&limit=5", "/riverui/api/queues"} {
		for _, auth := range []string{"", edgetest.Bearer("wrong"), edgetest.Bearer(ten.APIKey), "Basic " + edgetest.Basic("admin", "wrong"), "Basic " + edgetest.Basic("admin", ten.APIKey)} {
			rec := o.Do(t, "GET", path, auth, nil)
			require.Equal(t, http.StatusUnauthorized, rec.Code, "%s with %q", path, auth)
			require.Contains(t, rec.Header().Get("WWW-Authenticate"), "Basic")
		}
		// Mutating API calls are refused just the same.
		rec := o.Do(t, "POST", "/riverui/api/jobs/cancel", "", `{"job_ids": ["1"]}`)
		require.Equal(t, http.StatusUnauthorized, rec.Code)

		for _, auth := range []string{edgetest.Bearer(o.Admin), "Basic " + edgetest.Basic("admin", o.Admin)} {
			rec := o.Do(t, "GET", path, auth, nil)
			require.Equal(t, http.StatusOK, rec.Code, "%s with admin: %s", path, rec.Body.String())
		}
	}
	// The bare prefix redirects to the UI and shows nothing by itself.
	rec := o.Do(t, "GET", "/riverui", "", nil)
	require.NotEqual(t, http.StatusOK, rec.Code)
	require.Less(t, rec.Code, 500)
	page := o.Do(t, "GET", "/riverui/", edgetest.Bearer(o.Admin), nil)
	require.Contains(t, page.Header().Get("Content-Type"), "text/html")
}

// scrape returns /metrics as text.
func scrape(t *testing.T, o edgetest.Ops) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	rec := httptest.NewRecorder()
	o.H.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code)
	b, err := io.ReadAll(rec.Body)
	require.NoError(t, err)
	return string(b)
}

func TestMetricsAfterAMessageFlows(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 5)
	form := edgetest.InboundForm(ten, "whatsapp:"+testdb.PhoneNumber(), "hello")
	require.Equal(t, http.StatusOK, edgetest.Post(t, o.H, "/twilio/inbound", ten.AuthToken, form).Code)
	require.Equal(t, http.StatusOK, edgetest.Post(t, o.H, "/twilio/inbound", ten.AuthToken, form).Code) // redelivery
	require.Equal(t, http.StatusForbidden, edgetest.Post(t, o.H, "/twilio/inbound", "wrong", edgetest.InboundForm(ten, "+1555", "x")).Code)
	o.Do(t, "GET", "/api/v1/conversations", edgetest.Bearer(ten.APIKey), nil)

	m := scrape(t, o)
	for _, want := range []string{
		`conversa_webhooks_total{code="2xx",hook="inbound",outcome="ok"} 1`,
		`conversa_webhooks_total{code="2xx",hook="inbound",outcome="duplicate"} 1`,
		`conversa_webhooks_total{code="4xx",hook="inbound",outcome="forbidden"} 1`,
		`conversa_webhook_duplicates_suppressed_total{hook="inbound"} 1`,
		`conversa_webhook_latency_seconds_count{hook="inbound"} 3`,
		`conversa_api_requests_total{code="200",method="GET",route="/api/v1/conversations"} 1`,
		`conversa_queue_depth_up 1`,
		`conversa_queue_jobs{kind="conversa.reply",state="available"}`,
		`conversa_queue_jobs{kind="conversa.send",state="discarded"}`,
	} {
		require.Contains(t, m, want)
	}
	// Labels carry no tenant ids, numbers or bodies.
	require.NotContains(t, m, ten.ID)
	require.NotContains(t, m, strings.TrimPrefix(ten.WhatsApp, "whatsapp:"))
}

func TestWorkerHandlerServesOnlyProbesAndMetrics(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t)
	h := webhook.NewWorkerHandler(webhook.Deps{
		DB:      pool,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics: webhook.NewMetrics(prometheus.NewRegistry(), pool),
	})
	for path, status := range map[string]int{
		"/healthz": 200, "/readyz": 200, "/metrics": 200,
		"/api/v1/conversations": 404, "/riverui/": 404, "/twilio/inbound": 404,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		require.Equal(t, status, rec.Code, path)
	}
}
