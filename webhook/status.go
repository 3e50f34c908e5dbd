package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/store"
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

// status handles POST /twilio/status?m=<message id>: Twilio's delivery
// reports. The message is found by ?m= (which the sender sets) or by
// MessageSid; the signature is checked with the token of the account that
// owns the message's number. In one transaction: dedupe on (MessageSid,
// MessageStatus), apply the status monotonically (failures refund), and opt
// the contact out on error 21610. Bad input is 400/403 and writes nothing.
func (s *server) status(c *gin.Context) {
	ctx := c.Request.Context()
	form, err := readForm(c)
	if err != nil {
		s.webhookError(c, "status", err)
		return
	}
	sid := clean(strings.TrimSpace(form.Get("MessageSid")))
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
	target, err := store.CallbackTargetByID(ctx, s.DB, messageID, sid)
	if errors.Is(err, store.ErrNotFound) {
		// Without the message there is no account to check the signature with.
		s.webhookError(c, "status", fmt.Errorf("%w: unknown message", errForbidden))
		return
	}
	if err != nil {
		s.webhookError(c, "status", err)
		return
	}
	if a := form.Get("AccountSid"); a != "" && a != target.AccountSID {
		s.webhookError(c, "status", fmt.Errorf("%w: account does not own the message", errForbidden))
		return
	}
	if f := form.Get("From"); f != "" && f != target.ChannelAddress {
		s.webhookError(c, "status", fmt.Errorf("%w: From is not the message's number", errForbidden))
		return
	}
	token, err := s.Sealer.Open(target.AuthTokenSealed)
	if err != nil {
		s.webhookError(c, "status", fmt.Errorf("open auth token: %w", err))
		return
	}
	if !ValidSignature(token, s.publicURL(c.Request), form, c.GetHeader("X-Twilio-Signature")) {
		s.webhookError(c, "status", fmt.Errorf("%w: bad signature", errForbidden))
		return
	}

	applied, dup, err := s.applyStatus(c, target, sid, st, errorCode)
	if err != nil {
		s.webhookError(c, "status", err)
		return
	}
	log := s.Logger.With("tenant_id", target.TenantID, "message_id", target.MessageID, "message_sid", sid)
	if dup {
		log.Info("status callback duplicate suppressed", "status", st)
	} else {
		log.Info("status callback", "status", st, "applied", applied, "error_code", errorCode)
	}
	c.Status(http.StatusNoContent)
}

// applyStatus is the status callback's one transaction.
func (s *server) applyStatus(c *gin.Context, t store.CallbackTarget, sid, st, errorCode string) (applied, dup bool, err error) {
	ctx := c.Request.Context()
	tx, err := s.DB.Begin(ctx)
	if err != nil {
		return false, false, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	fresh, err := store.RecordStatusCallback(ctx, tx, sid, st)
	if err != nil || !fresh {
		return false, !fresh, err
	}
	applied, err = store.ApplyStatus(ctx, tx, store.StatusUpdate{
		TenantID: t.TenantID, MessageID: t.MessageID, MessageSID: sid, Status: st, ErrorCode: errorCode,
	})
	if err != nil {
		return false, false, err
	}
	if errorCode == "21610" {
		if err := store.SetContactOptOut(ctx, tx, t.TenantID, t.ContactID, true); err != nil {
			return false, false, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return false, false, fmt.Errorf("commit: %w", err)
	}
	return applied, false, nil
}
