package hook

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/conversa/conversa/internal/twilio/signature"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/edge"
)

// validStatus accepts what a Twilio status looks like (lowercase words),
// so outside input never reaches the trace unchecked.
func validStatus(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}

// Status handles POST /twilio/status?m=<message id>: Twilio's delivery
// reports. The message is found by ?m= (which the sender sets) or by
// MessageSid; the signature is checked with the token of the account that
// owns the message's number. In one transaction, shared with concurrent
// callbacks (see commitStatuses): dedupe on (MessageSid, MessageStatus),
// apply the status monotonically (failures refund), and opt the contact out
// on error 21610. Bad input is 400/403 and writes nothing.
func (s *Server) Status(c *gin.Context) {
	ctx := c.Request.Context()
	form, err := readForm(c)
	if err != nil {
		s.webhookError(c, "status", err)
		return
	}
	sid := edge.Clean(strings.TrimSpace(form.Get("MessageSid")))
	st := strings.ToLower(strings.TrimSpace(form.Get("MessageStatus")))
	errorCode := strings.TrimSpace(form.Get("ErrorCode"))
	if sid == "" || !validStatus(st) {
		s.webhookError(c, "status", fmt.Errorf("%w: missing or bad MessageSid/MessageStatus", errBadRequest))
		return
	}
	if _, err := strconv.Atoi(errorCode); errorCode != "" && (err != nil || len(errorCode) > 10) {
		s.webhookError(c, "status", fmt.Errorf("%w: bad ErrorCode", errBadRequest))
		return
	}
	var messageID int64
	if m := c.Query("m"); m != "" {
		messageID, err = strconv.ParseInt(m, 10, 64)
		if err != nil || messageID <= 0 {
			s.webhookError(c, "status", fmt.Errorf("%w: bad m", errBadRequest))
			return
		}
	}
	target, err := s.resolveTarget(ctx, c.Request, form, messageID, sid)
	if err != nil {
		s.webhookError(c, "status", err)
		return
	}

	res, err := s.group.applyStatus(ctx, statusCallback{target: target, sid: sid, status: st, errorCode: errorCode})
	if err != nil {
		s.webhookError(c, "status", err)
		return
	}
	if res.gone {
		// Erased since the cached look-up: as if it had never been found.
		s.targets.forget(target.MessageID)
		s.webhookError(c, "status", fmt.Errorf("%w: unknown message", errForbidden))
		return
	}
	log := s.Logger.With("tenant_id", target.TenantID, "message_id", target.MessageID, "message_sid", sid)
	if res.duplicate {
		log.Info("status callback duplicate suppressed", "status", st)
	} else {
		log.Info("status callback", "status", st, "applied", res.applied, "error_code", errorCode)
	}
	c.Status(http.StatusNoContent)
}

// resolveTarget finds the message a status callback is about (by ?m=, or
// with none by MessageSid) and checks the callback's account, number and
// signature against it. A message recently resolved by id comes from the
// cache; a callback that does not match the cached entry is checked again
// against the database before it is refused.
func (s *Server) resolveTarget(ctx context.Context, r *http.Request, form url.Values, messageID int64, sid string) (store.CallbackTarget, error) {
	if messageID > 0 {
		if e, ok := s.targets.get(messageID); ok {
			if s.checkTarget(r, form, e.target, e.token) == nil {
				return e.target, nil
			}
			s.targets.forget(messageID)
		}
	}
	target, err := store.CallbackTargetByID(ctx, s.StatusDB, messageID, sid)
	if errors.Is(err, store.ErrNotFound) {
		// Without the message there is no account to check the signature with.
		return target, fmt.Errorf("%w: unknown message", errForbidden)
	}
	if err != nil {
		return target, err
	}
	token, err := s.Sealer.Open(target.AuthTokenSealed)
	if err != nil {
		return target, fmt.Errorf("open auth token: %w", err)
	}
	if err := s.checkTarget(r, form, target, token); err != nil {
		return target, err
	}
	if messageID > 0 {
		s.targets.put(messageID, cachedTarget{target: target, token: token})
	}
	return target, nil
}

// checkTarget checks that a callback's account and number are its
// message's, and its signature by the account's token.
func (s *Server) checkTarget(r *http.Request, form url.Values, target store.CallbackTarget, token string) error {
	if a := form.Get("AccountSid"); a != "" && a != target.AccountSID {
		return fmt.Errorf("%w: account does not own the message", errForbidden)
	}
	if f := form.Get("From"); f != "" && f != target.ChannelAddress {
		return fmt.Errorf("%w: From is not the message's number", errForbidden)
	}
	if !signature.Valid(token, s.publicURL(r), form, r.Header.Get("X-Twilio-Signature")) {
		return fmt.Errorf("%w: bad signature", errForbidden)
	}
	return nil
}

// statusCallback is a status callback that passed every check, ready for
// its transaction.
type statusCallback struct {
	target    store.CallbackTarget
	sid       string
	status    string
	errorCode string
}

// statusResult is one status callback's outcome.
type statusResult struct {
	applied   bool // the message's status moved
	duplicate bool // the (MessageSid, MessageStatus) pair was already recorded
	gone      bool // the message no longer exists (erased after its look-up)
}

// applyStatus commits one status callback, grouped with concurrent callbacks
// into one transaction, and returns once it is durable.
func (g *committer) applyStatus(ctx context.Context, cb statusCallback) (statusResult, error) {
	return g.statuses.do(ctx, cb, g.s.commitStatuses, g.s.Logger)
}

// deadlockTries is how many times a status transaction runs when Postgres
// keeps choosing it to break a deadlock.
const deadlockTries = 3

// commitStatuses commits one or more status callbacks. The common ones (a
// status that is not a failure, about a message that has its SID) go in
// one round trip, each one statement (store.QuickApplyStatuses), in
// message-id order; the rest, and any the quick statement leaves, in the
// status transaction (statusTx). Both lock messages in id order, so
// concurrent batches wait on each other's locks without waiting in a
// circle; what can still close a circle (a refund, which locks the
// tenant's balance after its message, or a callback's two copies split
// between the two paths) is a deadlock Postgres breaks by aborting one
// transaction, which runs again, so a deadlock never reaches Twilio as a
// 503.
func (s *Server) commitStatuses(ctx context.Context, cbs []statusCallback) ([]statusResult, error) {
	results := make([]statusResult, len(cbs))
	order := sortedBy(cbs, func(a, b statusCallback) int { return cmp.Compare(a.target.MessageID, b.target.MessageID) })
	updates := make([]store.StatusUpdate, len(order))
	for n, i := range order {
		updates[n] = cbs[i].update()
	}
	quick, err := retryDeadlock(func() ([]store.QuickStatus, error) { return store.QuickApplyStatuses(ctx, s.StatusDB, updates) })
	if err != nil {
		return nil, err
	}
	var rest []int
	for n, i := range order {
		if !quick[n].Done {
			rest = append(rest, i)
			continue
		}
		results[i] = statusResult{applied: quick[n].Applied, duplicate: quick[n].Duplicate}
	}
	if len(rest) == 0 {
		return results, nil
	}
	slow := make([]statusCallback, len(rest))
	for n, i := range rest {
		slow[n] = cbs[i]
	}
	done, err := retryDeadlock(func() ([]statusResult, error) { return s.statusTx(ctx, slow) })
	if err != nil {
		return nil, err
	}
	for n, i := range rest {
		results[i] = done[n]
	}
	return results, nil
}

// retryDeadlock runs fn again (up to deadlockTries times in all) while
// Postgres chooses its transaction to break a deadlock.
func retryDeadlock[T any](fn func() (T, error)) (T, error) {
	for try := 1; ; try++ {
		out, err := fn()
		var pgErr *pgconn.PgError
		if try < deadlockTries && errors.As(err, &pgErr) && pgErr.Code == "40P01" { // deadlock_detected
			continue
		}
		return out, err
	}
}

// update is the callback as a store.StatusUpdate.
func (cb statusCallback) update() store.StatusUpdate {
	return store.StatusUpdate{TenantID: cb.target.TenantID, MessageID: cb.target.MessageID, MessageSID: cb.sid,
		Status: store.MessageStatus(cb.status), ErrorCode: cb.errorCode}
}

// statusTx runs one transaction for cbs, in three passes, each in an order
// that concurrent batches share, so that they wait on each other's locks
// without waiting in a circle:
//  1. dedupe, in (MessageSid, MessageStatus) order. A second copy of a pair
//     finds the first's row, uncommitted but ours, and is a duplicate as if
//     it had come later (the sort is stable: the first to arrive wins);
//  2. apply, in message-id order, stable, so one message's callbacks keep
//     their arrival order; the order across messages changes nothing, since
//     a status only moves forward;
//  3. opt contacts out on error 21610, in contact-id order.
//
// Pass 1 locks nothing passes 2 and 3 need. What can still close a circle is
// a refund, which locks the tenant's balance after its message inside
// store.ApplyStatus, or a quick statement (commitStatuses) that locked the
// message of a key pass 1 holds: commitStatuses retries the deadlock's
// victim.
func (s *Server) statusTx(ctx context.Context, cbs []statusCallback) ([]statusResult, error) {
	tx, err := s.StatusDB.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	results := make([]statusResult, len(cbs))
	// One statement records every pair of the batch (in key order).
	order := sortedBy(cbs, func(a, b statusCallback) int {
		return cmp.Or(strings.Compare(a.sid, b.sid), strings.Compare(a.status, b.status))
	})
	keys := make([]store.StatusCallbackKey, len(order))
	for n, i := range order {
		keys[n] = store.StatusCallbackKey{SID: cbs[i].sid, Status: cbs[i].status}
	}
	fresh, err := store.RecordStatusCallbacks(ctx, tx, keys)
	if err != nil {
		return nil, err
	}
	for n, i := range order {
		results[i].duplicate = !fresh[n]
	}
	for _, i := range sortedBy(cbs, func(a, b statusCallback) int { return cmp.Compare(a.target.MessageID, b.target.MessageID) }) {
		if results[i].duplicate {
			continue
		}
		results[i].applied, err = store.ApplyStatus(ctx, tx, cbs[i].update())
		if errors.Is(err, store.ErrNotFound) {
			// Erased since its (cached) look-up: this callback alone is
			// refused; the others of the batch go on.
			results[i].gone = true
			continue
		}
		if err != nil {
			return nil, err
		}
	}
	for _, i := range sortedBy(cbs, func(a, b statusCallback) int { return cmp.Compare(a.target.ContactID, b.target.ContactID) }) {
		if results[i].duplicate || results[i].gone || !store.OptsOut(cbs[i].errorCode) {
			continue
		}
		if err := store.SetContactOptOut(ctx, tx, cbs[i].target.TenantID, cbs[i].target.ContactID, true); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return results, nil
}

// sortedBy returns the indexes of cbs in the order compare gives, keeping
// the arrival order of equals.
func sortedBy(cbs []statusCallback, compare func(a, b statusCallback) int) []int {
	order := make([]int, len(cbs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return compare(cbs[a], cbs[b]) })
	return order
}
