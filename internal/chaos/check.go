package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/conversa/conversa/store"

	"github.com/conversa/conversa/internal/faketwilio"
)

// Report is a chaos run's figures and the violations of the promise.
type Report struct {
	Figures    [][2]string
	Violations []string
}

func (r *Report) add(name string, v any) {
	r.Figures = append(r.Figures, [2]string{name, fmt.Sprint(v)})
}
func (r *Report) violate(f string, args ...any) {
	r.Violations = append(r.Violations, fmt.Sprintf(f, args...))
}

// String is the figures table, then the violations (at most 30 shown).
func (r *Report) String() string {
	var b strings.Builder
	w := 0
	for _, f := range r.Figures {
		w = max(w, len(f[0]))
	}
	fmt.Fprintf(&b, "| %-*s | %s\n", w, "figure", "value")
	fmt.Fprintf(&b, "| %s | %s\n", strings.Repeat("-", w), "-----")
	for _, f := range r.Figures {
		fmt.Fprintf(&b, "| %-*s | %s\n", w, f[0], f[1])
	}
	fmt.Fprintf(&b, "\nviolations: %d\n", len(r.Violations))
	for i, v := range r.Violations {
		if i == 30 {
			fmt.Fprintf(&b, "  ... and %d more\n", len(r.Violations)-30)
			break
		}
		fmt.Fprintf(&b, "  - %s\n", v)
	}
	return b.String()
}

// check reads the fake Twilio's record and the database and judges the run.
func (h *harness) check(ctx context.Context, l *load, drained bool) (*Report, error) {
	r := &Report{}
	tenant := h.tenantID

	// The run itself.
	h.mu.Lock()
	r.add("chaos events", strings.Join(h.events, "; "))
	h.mu.Unlock()
	faults := h.faults.Counts()
	var fk []string
	for k, n := range faults {
		fk = append(fk, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(fk)
	r.add("Twilio faults drawn", strings.Join(fk, " "))
	r.add("Twilio create requests", h.fake.Requests())

	// Stale and duplicate status callbacks must change nothing.
	replayed, err := h.replayCallbacks(ctx, r, 0.10)
	if err != nil {
		return nil, err
	}
	r.add("stale/duplicate status callbacks replayed", replayed)

	// Inbound: stored once, nothing lost.
	l.mu.Lock()
	sent, acked := len(l.sent), len(l.acked)
	ackedSet := make(map[string]bool, len(l.acked))
	for k := range l.acked {
		ackedSet[k] = true
	}
	sentSet := make(map[string]bool, len(l.sent))
	for k := range l.sent {
		sentSet[k] = true
	}
	l.mu.Unlock()
	r.add("inbound messages sent (distinct MessageSid)", sent)
	r.add("redeliveries (of which concurrent)", fmt.Sprintf("%d (%d)", l.redeliveries.Load(), l.concurrent.Load()))
	r.add("webhook posts / retried after no 200", fmt.Sprintf("%d / %d", l.posts.Load(), l.retried.Load()))
	r.add("webhooks refused (4xx) / given up", fmt.Sprintf("%d / %d", l.rejected.Load(), l.gaveUp.Load()))
	if n := l.rejected.Load(); n > 0 {
		r.violate("%d correctly signed webhooks were refused with a 4xx", n)
	}
	if n := l.gaveUp.Load(); n > 0 {
		r.violate("%d webhooks never got a 200 within a minute of retries", n)
	}
	r.add("inbound acknowledged (200)", acked)

	type inbound struct {
		ID       int64   `db:"id"`
		SID      string  `db:"twilio_sid"`
		Answered bool    `db:"answered"`
		Outcome  *string `db:"outcome"`
		IsLast   bool    `db:"is_last"`
	}
	rows, err := h.pool.Query(ctx, `
		SELECT m.id, m.twilio_sid,
		       EXISTS (SELECT 1 FROM messages r WHERE r.reply_to_id = m.id) AS answered,
		       (SELECT string_agg(DISTINCT e.kind || ':' || COALESCE(e.detail->>'reason', ''), ',')
		        FROM message_events e WHERE e.message_id = m.id
		          AND e.kind IN ('turn.skipped', 'turn.no_credits', 'turn.failed', 'turn.duplicate')) AS outcome,
		       m.id = c.last_inbound_message_id AS is_last
		FROM messages m JOIN conversations c ON c.id = m.conversation_id
		WHERE m.tenant_id = $1 AND m.direction = 'inbound'`, tenant)
	if err != nil {
		return nil, fmt.Errorf("read inbound: %w", err)
	}
	ins, err := pgx.CollectRows(rows, pgx.RowToStructByName[inbound])
	if err != nil {
		return nil, fmt.Errorf("read inbound: %w", err)
	}
	stored := map[string]int{}
	var answered, superseded, unexplained int
	reasons := map[string]int{}
	for _, m := range ins {
		stored[m.SID]++
		if !sentSet[m.SID] {
			r.violate("inbound %d has a MessageSid the load never sent", m.ID)
		}
		out := ""
		if m.Outcome != nil {
			out = *m.Outcome
		}
		switch {
		case m.Answered:
			answered++
		case strings.Contains(out, "superseded") && !m.IsLast:
			superseded++
		case out != "":
			reasons[out]++
		default:
			unexplained++
			r.violate("inbound %d (%s) was neither answered nor skipped with a reason", m.ID, m.SID)
		}
	}
	var lost int
	for sid := range ackedSet {
		if stored[sid] == 0 {
			lost++
			r.violate("inbound %s was acknowledged but is not stored (lost)", sid)
		}
	}
	var twice int
	for sid, n := range stored {
		if n > 1 {
			twice++
			r.violate("inbound %s is stored %d times", sid, n)
		}
	}
	r.add("inbound stored", len(ins))
	r.add("inbound lost (acknowledged, not stored)", lost)
	r.add("inbound stored twice", twice)
	r.add("inbound answered", answered)
	r.add("inbound superseded by a later message", superseded)
	r.add("inbound skipped with another reason", fmtCounts(reasons))
	r.add("inbound unexplained (LOST)", unexplained)

	// Outbound: every reply accepted by Twilio exactly once, or failed with a reason.
	type outbound struct {
		ID       int64   `db:"id"`
		Status   string  `db:"status"`
		SID      *string `db:"twilio_sid"`
		Reason   *string `db:"error_reason"`
		Reserved int     `db:"credits_reserved"`
		Refunded bool    `db:"refunded"`
		Debited  bool    `db:"debited"`
	}
	rows, err = h.pool.Query(ctx, `
		SELECT m.id, m.status, m.twilio_sid, m.error_reason, m.credits_reserved,
		       EXISTS (SELECT 1 FROM credit_ledger l WHERE l.message_id = m.id AND l.reason = 'refund') AS refunded,
		       EXISTS (SELECT 1 FROM credit_ledger l WHERE l.message_id = m.id AND l.reason = 'reply') AS debited
		FROM messages m WHERE m.tenant_id = $1 AND m.direction = 'outbound'`, tenant)
	if err != nil {
		return nil, fmt.Errorf("read outbound: %w", err)
	}
	outs, err := pgx.CollectRows(rows, pgx.RowToStructByName[outbound])
	if err != nil {
		return nil, fmt.Errorf("read outbound: %w", err)
	}
	accepted := map[int64][]faketwilio.Message{}
	all := h.fake.Accepted("")
	for _, m := range all {
		u, err := url.Parse(m.StatusCallback)
		id, perr := strconv.ParseInt(u.Query().Get("m"), 10, 64)
		if err != nil || perr != nil {
			r.violate("Twilio accepted %s without a StatusCallback ?m= id", m.SID)
			continue
		}
		accepted[id] = append(accepted[id], m)
	}
	byID := map[int64]bool{}
	var dups, stuck, failed, delivered, unrecorded, refunds, debits, wrongRefund int
	failReasons := map[string]int{}
	statuses := map[string]int{}
	for _, o := range outs {
		byID[o.ID] = true
		statuses[o.Status]++
		acc := accepted[o.ID]
		if o.Debited {
			debits++
		}
		if o.Refunded {
			refunds++
		}
		if len(acc) > 1 {
			dups++
			r.violate("reply %d was accepted by Twilio %d times (duplicate send)", o.ID, len(acc))
		}
		switch o.Status {
		case string(store.StatusPending), string(store.StatusClaimed), string(store.StatusSending):
			stuck++
			r.violate("reply %d is stuck in %q after the drain", o.ID, o.Status)
		case "failed", "undelivered":
			failed++
			reason := ""
			if o.Reason != nil {
				reason = *o.Reason
			}
			failReasons[reason]++
			if reason == "" {
				r.violate("reply %d is %s without a reason", o.ID, o.Status)
			}
			if o.Status == "failed" && len(acc) > 0 {
				r.violate("reply %d is failed (%s) but Twilio accepted it", o.ID, reason)
			}
			if o.Reserved > 0 && !o.Refunded {
				r.violate("reply %d is %s but its credits were not refunded", o.ID, o.Status)
			}
		default:
			if o.Status == "delivered" || o.Status == "read" {
				delivered++
			}
			if len(acc) == 0 {
				r.violate("reply %d is %q but Twilio never accepted it", o.ID, o.Status)
			}
			if o.Refunded {
				wrongRefund++
				r.violate("reply %d is %q yet was refunded", o.ID, o.Status)
			}
		}
		if len(acc) > 0 && (o.SID == nil || *o.SID != acc[0].SID) {
			unrecorded++
			r.violate("reply %d: Twilio accepted %s but the database holds SID %v", o.ID, acc[0].SID, deref(o.SID))
		}
		if o.Reserved > 0 && !o.Debited {
			r.violate("reply %d reserved %d credits but was never debited", o.ID, o.Reserved)
		}
	}
	// A failure must be visible to an operator: the trace API says why.
	var traced int
	for _, o := range outs {
		if (o.Status != "failed" && o.Status != "undelivered") || traced == 20 {
			continue
		}
		traced++
		if why := h.traceExplains(ctx, o.ID, o.Status); why != "" {
			r.violate("reply %d: the trace API does not explain its failure: %s", o.ID, why)
		}
	}

	var orphans int
	for id, acc := range accepted {
		if !byID[id] {
			orphans += len(acc)
			r.violate("Twilio accepted %d message(s) for ?m=%d, which is no reply of ours", len(acc), id)
		}
	}
	r.add("replies written", len(outs))
	r.add("Twilio accepted sends", len(all))
	r.add("duplicate sends (accepted > 1 per reply)", dups)
	r.add("accepted sends for no reply", orphans)
	r.add("replies by status", fmtCounts(statuses))
	r.add("replies failed/undelivered, by reason", fmtCounts(failReasons))
	r.add("replies stuck pending/claimed/sending", stuck)
	r.add("status callbacks the fake Twilio lost on purpose", h.fake.LostCallbacks())
	r.add("accepted, no final status at the drain (callbacks lost)", h.unfinishedAtDrain)
	noFinal := statuses["queued"] + statuses["accepted"] + statuses["scheduled"] + statuses["sent"]
	r.add("accepted, no final status after reconciliation", noFinal)
	if noFinal > 0 {
		r.violate("%d accepted replies still have no final status after reconciliation", noFinal)
	}
	var reconciled int
	if err := h.pool.QueryRow(ctx, `SELECT count(DISTINCT message_id) FROM message_events
		WHERE kind = 'status.reconciled' AND (detail->>'applied')::boolean`).Scan(&reconciled); err != nil {
		return nil, fmt.Errorf("read reconciled: %w", err)
	}
	r.add("replies whose status reconciliation applied", reconciled)
	r.add("accepted but SID not recorded", unrecorded)
	r.add("failed replies whose trace API shows reason + refund", traced)

	// Status histories: no message moved backwards.
	regress, err := h.checkMonotonic(ctx, r)
	if err != nil {
		return nil, err
	}
	r.add("status regressions in event histories", regress)

	// Jobs.
	rows, err = h.pool.Query(ctx, `SELECT kind || ' ' || state::text, count(*)::int FROM river_job
		WHERE kind LIKE 'conversa.%' AND kind <> ALL($1) GROUP BY 1 ORDER BY 1`, periodicKinds)
	if err != nil {
		return nil, fmt.Errorf("read jobs: %w", err)
	}
	jobStates := map[string]int{}
	var waiting int
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			rows.Close()
			return nil, err
		}
		jobStates[k] = n
		for _, s := range []string{"available", "running", "retryable", "scheduled", "pending"} {
			if strings.HasSuffix(k, " "+s) {
				waiting += n
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	r.add("jobs by kind and state", fmtCounts(jobStates))
	r.add("queue drained before the deadline", drained)
	if !drained || waiting > 0 {
		r.violate("%d conversa jobs still waiting or running %s after the load", waiting, h.cfg.Drain)
	}

	// Credits.
	var balance, topups, ledgerSum, debitSum, refundSum int64
	err = h.pool.QueryRow(ctx, `
		SELECT (SELECT COALESCE(SUM(credits), 0) FROM credit_stripes WHERE tenant_id = $1)::bigint,
		       COALESCE(SUM(l.amount) FILTER (WHERE l.reason = 'topup'), 0)::bigint,
		       COALESCE(SUM(l.amount), 0)::bigint,
		       COALESCE(-SUM(l.amount) FILTER (WHERE l.reason = 'reply'), 0)::bigint,
		       COALESCE(SUM(l.amount) FILTER (WHERE l.reason = 'refund'), 0)::bigint
		FROM credit_ledger l WHERE l.tenant_id = $1`, tenant).Scan(&balance, &topups, &ledgerSum, &debitSum, &refundSum)
	if err != nil {
		return nil, fmt.Errorf("read credits: %w", err)
	}
	r.add("credits: topups / debits / refunds", fmt.Sprintf("%d / %d (%d replies) / %d (%d replies)", topups, debitSum, debits, refundSum, refunds))
	r.add("credits: balance / topups − debits + refunds", fmt.Sprintf("%d / %d", balance, topups-debitSum+refundSum))
	if balance != ledgerSum || balance != topups-debitSum+refundSum {
		r.violate("credit balance %d does not match the ledger (%d)", balance, topups-debitSum+refundSum)
	}
	if debits != len(outs) {
		r.violate("%d replies but %d debits", len(outs), debits)
	}
	if refunds != failed {
		r.violate("%d failed/undelivered replies but %d refunds", failed, refunds)
	}

	// Event webhooks: every event written was delivered.
	if err := h.checkEvents(ctx, r); err != nil {
		return nil, err
	}
	r.add("violations", len(r.Violations))
	return r, nil
}

// checkMonotonic replays every outbound message's Twilio status history
// (the accepted answer, applied callbacks and reconciled look-ups, failure)
// and counts moves back.
func (h *harness) checkMonotonic(ctx context.Context, r *Report) (int, error) {
	rows, err := h.pool.Query(ctx, `
		SELECT e.message_id, e.kind, COALESCE(e.detail->>'status', ''), COALESCE(e.detail->>'applied', 'true')
		FROM message_events e JOIN messages m ON m.id = e.message_id
		WHERE m.tenant_id = $1 AND m.direction = 'outbound'
		  AND e.kind IN ('send.accepted', 'status.callback', 'status.reconciled', 'send.failed')
		ORDER BY e.message_id, e.id`, h.tenantID)
	if err != nil {
		return 0, fmt.Errorf("read status events: %w", err)
	}
	defer rows.Close()
	cur := map[int64]store.MessageStatus{}
	var regress int
	for rows.Next() {
		var id int64
		var kind, st, applied string
		if err := rows.Scan(&id, &kind, &st, &applied); err != nil {
			return 0, err
		}
		if kind == "send.failed" {
			st = "failed"
		}
		if applied != "true" || st == "" {
			continue
		}
		// The store's own state machine judges each move: a status seen
		// again is no move, anything else the table does not allow is one
		// back (or out of a terminal status).
		prev, next := cur[id], store.MessageStatus(st)
		switch {
		case prev == "" || store.Moves(prev, next):
			cur[id] = next.Stores()
		case next.Stores() != prev:
			regress++
			r.violate("reply %d moved from %s to %s", id, prev, st)
		}
	}
	return regress, rows.Err()
}

func fmtCounts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s=%d", name, m[k]))
	}
	return strings.Join(parts, " ")
}

func deref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}

// traceExplains reads GET /api/v1/messages/{id}/trace as an operator would
// and returns what is missing ("" when the trace shows the failure, its
// reason and its refund).
func (h *harness) traceExplains(ctx context.Context, id int64, status string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/api/v1/messages/%d/trace", h.baseURL, id), nil)
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+h.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.Status
	}
	var tr struct {
		Message struct {
			Status string `json:"status"`
		} `json:"message"`
		Events []struct {
			Kind   string         `json:"kind"`
			Detail map[string]any `json:"detail"`
		} `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		return err.Error()
	}
	if tr.Message.Status != status {
		return fmt.Sprintf("status %q, database %q", tr.Message.Status, status)
	}
	var reason, refund bool
	for _, e := range tr.Events {
		switch {
		case e.Kind == "send.failed" && e.Detail["reason"] != "":
			reason = true
		case (e.Kind == "status.callback" || e.Kind == "status.reconciled") && e.Detail["status"] == status:
			// Twilio's failure report, by callback or found by reconciliation.
			reason = true
		case e.Kind == "credits.refunded":
			refund = true
		}
	}
	switch {
	case !reason:
		return "no send.failed or failure callback event"
	case !refund:
		return "no credits.refunded event"
	}
	return ""
}
