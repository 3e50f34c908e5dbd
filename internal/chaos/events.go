package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/conversa/conversa/store"
)

// eventSink is the tenant's event webhook endpoint, in this process: it
// answers 500 to a share of the POSTs, and records which events it
// acknowledged and how often.
type eventSink struct {
	srv      *httptest.Server
	failRate float64
	mu       sync.Mutex
	acked    map[int64]int
	failed   int
}

func newEventSink(failRate float64) *eventSink {
	s := &eventSink{failRate: failRate, acked: map[int64]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev struct {
			ID int64 `json:"id"`
		}
		if json.Unmarshal(body, &ev) != nil || ev.ID == 0 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if rand.Float64() < s.failRate {
			s.failed++
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		s.acked[ev.ID]++
		w.WriteHeader(http.StatusNoContent)
	}))
	return s
}

// register makes the sink the tenant's endpoint for every event type.
func (s *eventSink) register(ctx context.Context, h *harness) error {
	_, _, err := store.PutEndpoint(ctx, h.pool, store.Endpoint{TenantID: h.tenantID, Name: "chaos", URL: s.srv.URL + "/events"})
	return err
}

// checkEvents waits, up to a minute, until every event is relayed and its
// delivery job done, then checks that the sink acknowledged every event the
// database wrote: an event written and never delivered is lost.
func (h *harness) checkEvents(ctx context.Context, r *Report) error {
	deadline := time.Now().Add(time.Minute)
	var waiting int
	for {
		err := h.pool.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM events WHERE seq IS NULL)
			     + (SELECT count(*) FROM river_job WHERE kind = 'conversa.event'
			        AND state IN ('available', 'running', 'retryable', 'scheduled', 'pending'))`).Scan(&waiting)
		if err != nil {
			return fmt.Errorf("events waiting: %w", err)
		}
		if waiting == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	rows, err := h.pool.Query(ctx, `SELECT id FROM events WHERE tenant_id = $1`, h.tenantID)
	if err != nil {
		return err
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	s := h.sink
	s.mu.Lock()
	defer s.mu.Unlock()
	lost, twice := 0, 0
	for _, id := range ids {
		switch n := s.acked[id]; {
		case n == 0:
			lost++
		case n > 1:
			twice++
		}
	}
	r.add("events written / acknowledged by the endpoint / answered 500 (retried)", fmt.Sprintf("%d / %d / %d", len(ids), len(s.acked), s.failed))
	r.add("events delivered more than once (a worker killed after the POST)", twice)
	if waiting > 0 {
		r.violate("%d events still not relayed or delivered a minute after the drain", waiting)
	}
	if lost > 0 {
		r.violate("%d events written and never delivered", lost)
	}
	return nil
}
