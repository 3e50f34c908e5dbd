package hook_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

// TestStatusConcurrentCallbacksEndAsIfSequential posts a burst of status
// callbacks at once: several messages, several statuses each, out of order,
// every callback three times. Each message must end exactly like a twin that
// got the same callbacks one by one: same status, one record and one trace
// event per (MessageSid, MessageStatus), a failure refunded once.
func TestStatusConcurrentCallbacksEndAsIfSequential(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := edge(t, 0)
	type callback struct{ status, errorCode string }
	// Each script's outcome does not depend on the order its callbacks
	// arrive in, so any interleaving must give the sequential end state.
	scripts := []struct {
		name      string
		withSID   bool
		callbacks []callback
		want      store.MessageStatus
		refunded  bool
		optedOut  bool
	}{
		{"read", true, []callback{{"queued", ""}, {"sent", ""}, {"delivered", ""}, {"read", ""}}, store.StatusRead, false, false},
		{"delivered", true, []callback{{"sent", ""}, {"delivered", ""}}, store.StatusDelivered, false, false},
		{"failed", true, []callback{{"queued", ""}, {"sent", ""}, {"failed", "30008"}}, store.StatusFailed, true, false},
		{"unsubscribed", true, []callback{{"sent", ""}, {"undelivered", "21610"}}, store.StatusUndelivered, true, true},
		{"send answer lost", false, []callback{{"sent", ""}, {"delivered", ""}}, store.StatusDelivered, false, false},
	}
	const perScript, copies = 3, 3

	type request struct {
		m    sentMessage
		form url.Values
	}
	var burst []request
	type pair struct {
		conc, seq sentMessage
		credits   int64 // conc's tenant's before the callbacks
	}
	pairs := make([][]pair, len(scripts))
	for i, sc := range scripts {
		for range perScript {
			p := pair{conc: newSentMessage(t, sc.withSID), seq: newSentMessage(t, sc.withSID)}
			p.credits = p.conc.state(t).Credits
			pairs[i] = append(pairs[i], p)
			var seq []request
			for _, cb := range sc.callbacks {
				for range copies {
					burst = append(burst, request{p.conc, statusForm(p.conc, cb.status, cb.errorCode)})
					seq = append(seq, request{p.seq, statusForm(p.seq, cb.status, cb.errorCode)})
				}
			}
			rand.Shuffle(len(seq), func(a, b int) { seq[a], seq[b] = seq[b], seq[a] })
			for _, r := range seq {
				rec := edgetest.Post(t, h, r.m.path(), r.m.ten.AuthToken, r.form)
				require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
			}
		}
	}
	rand.Shuffle(len(burst), func(a, b int) { burst[a], burst[b] = burst[b], burst[a] })

	codes := make([]int, len(burst))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes[i] = edgetest.Post(t, h, r.m.path(), r.m.ten.AuthToken, r.form).Code
		}()
	}
	close(start)
	wg.Wait()
	for i, code := range codes {
		require.Equal(t, http.StatusNoContent, code, "callback %d", i)
	}

	pool := testdb.Pool(t)
	for i, sc := range scripts {
		for _, p := range pairs[i] {
			got, want := p.conc.state(t), p.seq.state(t)
			require.Equal(t, p.conc.sid, *got.SID, sc.name)
			require.Equal(t, p.seq.sid, *want.SID, sc.name)
			got.SID, want.SID = nil, nil
			require.Equal(t, want, got, sc.name)

			require.Equal(t, sc.want, got.Status, sc.name)
			require.Equal(t, len(sc.callbacks), got.Callbacks, sc.name)
			require.Equal(t, sc.optedOut, got.OptedOut, sc.name)
			var traced, refunds int
			require.NoError(t, pool.QueryRow(ctx, `
				SELECT (SELECT count(*) FROM message_events WHERE message_id = $1 AND kind = 'status.callback'),
				       (SELECT count(*) FROM credit_ledger WHERE message_id = $1 AND reason = 'refund')`,
				p.conc.id).Scan(&traced, &refunds))
			require.Equal(t, len(sc.callbacks), traced, "%s: one trace event per status, none per duplicate", sc.name)
			if sc.refunded {
				require.Equal(t, 1, refunds, sc.name)
				require.Equal(t, p.credits+1, got.Credits, "%s: refunded once", sc.name)
			} else {
				require.Zero(t, refunds, sc.name)
				require.Equal(t, p.credits, got.Credits, sc.name)
			}
		}
	}
}

// statusForm is a status callback for m, with errorCode unless it is empty.
func statusForm(m sentMessage, status, errorCode string) url.Values {
	f := m.form(status)
	if errorCode != "" {
		f.Set("ErrorCode", errorCode)
	}
	return f
}
