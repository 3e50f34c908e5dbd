package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/conversa/conversa/internal/twiliohook"
)

// replayCallbacks attacks the status endpoint after the drain, as Twilio's
// best-effort, unordered callbacks would: for a share of the accepted
// messages it posts, correctly signed, a stale "queued" and "sent" and a
// duplicate of the final status. None of it may change anything: it
// returns how many callbacks were posted and records, as violations, any
// answer other than 204 and any message whose status or credits moved.
func (h *harness) replayCallbacks(ctx context.Context, r *Report, share float64) (int, error) {
	before, err := h.snapshot(ctx)
	if err != nil {
		return 0, err
	}
	p := &twiliohook.Poster{HC: &http.Client{Timeout: 10 * time.Second}, Target: h.baseURL, PublicBaseURL: h.baseURL}
	var posted, refused int
	for _, m := range h.fake.Accepted("") {
		if rand.Float64() >= share || !strings.HasPrefix(m.StatusCallback, h.baseURL) {
			continue
		}
		path := strings.TrimPrefix(m.StatusCallback, h.baseURL)
		u, err := url.Parse(m.StatusCallback)
		if err != nil {
			continue
		}
		id, _ := strconv.ParseInt(u.Query().Get("m"), 10, 64)
		if !strings.HasPrefix(before[id], m.Status+" ") {
			// Its final callback was lost (the server was down): replaying
			// it would rightly move the message. Only settled ones are attacked.
			continue
		}
		for _, st := range []string{"queued", "sent", m.Status} {
			form := url.Values{
				"MessageSid": {m.SID}, "SmsSid": {m.SID}, "MessageStatus": {st}, "SmsStatus": {st},
				"AccountSid": {m.AccountSID}, "From": {m.From}, "To": {m.To}, "ApiVersion": {"2010-04-01"},
			}
			if st == m.Status && m.ErrorCode != 0 {
				form.Set("ErrorCode", strconv.Itoa(m.ErrorCode))
			}
			code, err := p.Post(ctx, path, h.token, form)
			posted++
			if err != nil || code != http.StatusNoContent {
				refused++
				if refused <= 5 {
					r.violate("replayed %s callback for %s answered %d (%v)", st, m.SID, code, err)
				}
			}
		}
	}
	after, err := h.snapshot(ctx)
	if err != nil {
		return posted, err
	}
	for id, was := range before {
		if now := after[id]; now != was {
			r.violate("reply %d changed under replayed callbacks: %s → %s", id, was, now)
		}
	}
	return posted, nil
}

// snapshot is every reply's status, SID and ledger entries.
func (h *harness) snapshot(ctx context.Context) (map[int64]string, error) {
	rows, err := h.pool.Query(ctx, `
		SELECT m.id, m.status || ' ' || COALESCE(m.twilio_sid, '-') || ' ' ||
		       COALESCE((SELECT string_agg(l.reason || l.amount, ',' ORDER BY l.id) FROM credit_ledger l WHERE l.message_id = m.id), '')
		FROM messages m WHERE m.tenant_id = $1 AND m.direction = 'outbound'`, h.tenantID)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer rows.Close()
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var s string
		if err := rows.Scan(&id, &s); err != nil {
			return nil, err
		}
		out[id] = s
	}
	return out, rows.Err()
}
