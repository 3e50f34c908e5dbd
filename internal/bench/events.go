package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"
)

// eventsFigure: the sustained run of figure 3 with an event webhook
// endpoint that takes every event; each event's lag is from its commit
// (created_at) to its arrival at the endpoint, which answers 200 at once.
func (b *bench) eventsFigure(ctx context.Context, r *report) error {
	var mu sync.Mutex
	var lags []time.Duration
	var created []time.Time
	seen := map[int64]bool{}
	dups := 0
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var ev struct {
			ID        int64     `json:"id"`
			CreatedAt time.Time `json:"created_at"`
		}
		if err := json.Unmarshal(body, &ev); err == nil {
			lag := time.Since(ev.CreatedAt)
			mu.Lock()
			if seen[ev.ID] {
				dups++
			} else {
				seen[ev.ID] = true
				lags = append(lags, lag)
				created = append(created, ev.CreatedAt)
			}
			mu.Unlock()
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer rcv.Close()
	p, err := b.startPipeline(ctx, "TOOLS_ALLOW_PRIVATE=1")
	if err != nil {
		return err
	}
	defer p.stop()
	put, _ := json.Marshal(map[string]any{"url": rcv.URL + "/events"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.base+"/api/v1/tenants/"+b.tenant.id+"/webhooks/bench", bytes.NewReader(put))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer bench")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT webhook: HTTP %d", resp.StatusCode)
	}
	run, err := b.sustained(ctx, p)
	if err != nil {
		return err
	}
	// Wait for the events of the replies' last statuses to arrive.
	var total int
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE tenant_id = $1`, b.tenant.id).Scan(&total); err != nil {
			return err
		}
		mu.Lock()
		got := len(lags)
		mu.Unlock()
		if got >= total && total > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	mu.Lock()
	pc := percentiles(lags)
	rows := run.rows()
	rows = append(rows,
		[2]string{"events written / delivered (each once) / delivered twice", fmt.Sprintf("%d / %d / %d", total, len(lags), dups)},
		[2]string{"event lag, commit to endpoint, flat out (p50 / p99 / max)", fmt.Sprintf("%s / %s / %s", ms(pc[50]), ms(pc[99]), ms(pc[100]))},
	)
	mu.Unlock()

	// Then a load the machine sustains: 40 messages/s for 15 s.
	const pacedRate, pacedFor = 40, 15 * time.Second
	s := newSender(p.base, p.base, b.tenant)
	start := time.Now()
	tick := time.NewTicker(time.Second / pacedRate)
	var wg sync.WaitGroup
	for i := 0; time.Since(start) < pacedFor; i++ {
		<-tick.C
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, _ = s.post(ctx, "whatsapp:"+randPhone("+1558"), s.tenant.numbers[i%len(s.tenant.numbers)])
		}(i)
	}
	tick.Stop()
	wg.Wait()
	var pacedTotal int
	deadline = time.Now().Add(60 * time.Second)
	var paced []time.Duration
	for time.Now().Before(deadline) {
		if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE tenant_id = $1 AND created_at >= $2`, b.tenant.id, start).Scan(&pacedTotal); err != nil {
			return err
		}
		mu.Lock()
		paced = paced[:0]
		for i, c := range created {
			if !c.Before(start) {
				paced = append(paced, lags[i])
			}
		}
		mu.Unlock()
		if len(paced) >= pacedTotal && pacedTotal > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	pp := percentiles(paced)
	rows = append(rows,
		[2]string{fmt.Sprintf("then %d messages/s for %s: events written / delivered", pacedRate, pacedFor), fmt.Sprintf("%d / %d", pacedTotal, len(paced))},
		[2]string{fmt.Sprintf("event lag at %d messages/s (p50 / p99 / max)", pacedRate), fmt.Sprintf("%s / %s / %s", ms(pp[50]), ms(pp[99]), ms(pp[100]))},
	)
	r.add("8. Event webhooks under the sustained load (figure 3's run with an endpoint taking every event)", rows)
	return nil
}
