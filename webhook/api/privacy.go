package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// Erasure and retention (README, "Erasure and retention"); the statements
// are store/erasure.go's.

// ErasureDB is what an erasure runs on; *pgxpool.Pool satisfies it.
type ErasureDB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// ContactErasure is the answer to an erasure: each contact erased (a bare
// number may name an SMS and a WhatsApp contact) and its audit record.
type ContactErasure struct {
	ContactID int64            `json:"contact_id"`
	ErasureID int64            `json:"erasure_id"`
	Rows      map[string]int64 `json:"rows"`
}

// EraseContact erases the tenant's contact(s) at address (see
// store.ErasureAddresses) in one transaction: the erasure list, the
// Redis memory (before the commit), the contacts' unfinished River jobs
// (cancelled), and one audit record per contact naming requestedBy. Bad
// address: a FieldError on "address"; no such contact: store.ErrNotFound;
// Redis configured but not answering: store.ErrMemoryUnavailable, and
// nothing is erased.
func EraseContact(ctx context.Context, db ErasureDB, jobs jobargs.JobCanceller[pgx.Tx], mem *store.Memory, tenantID, address, requestedBy string) ([]ContactErasure, error) {
	addresses, ok := store.ErasureAddresses(address)
	if !ok {
		return nil, fieldErr("address", invalid("address must be a number in E.164 form (+15551234567), which erases it on every channel, or a channel address (whatsapp:+15551234567)"))
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	erased, err := store.EraseContacts(ctx, tx, mem, tenantID, addresses)
	if err != nil {
		return nil, err
	}
	out := make([]ContactErasure, 0, len(erased))
	for _, e := range erased {
		n, err := jobargs.CancelJobsOf(ctx, tx, jobs, e.ConversationIDs, e.MessageIDs)
		if err != nil {
			return nil, err
		}
		e.Rows["river_jobs_cancelled"] = n
		id, err := store.RecordErasure(ctx, tx, store.ErasureRecord{TenantID: tenantID, Kind: store.ErasureContact,
			ContactID: &e.ContactID, RequestedBy: requestedBy, Rows: e.Rows})
		if err != nil {
			return nil, err
		}
		out = append(out, ContactErasure{ContactID: e.ContactID, ErasureID: id, Rows: e.Rows})
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit erasure: %w", err)
	}
	return out, nil
}

// DeleteContact handles DELETE /api/v1/tenants/:id/contacts/:address.
func (s *Server) DeleteContact(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	jobs, ok := s.River.(jobargs.JobCanceller[pgx.Tx])
	if !ok {
		s.apiError(c, errors.New("erasure needs a River client that can cancel jobs"))
		return
	}
	by := store.RequestedByTenantKey
	if who(c).admin {
		by = store.RequestedByAdmin
	}
	erased, err := EraseContact(c.Request.Context(), s.DB, jobs, s.Memory, tenantID, c.Param("address"), by)
	if errors.Is(err, store.ErrMemoryUnavailable) {
		c.AbortWithStatusJSON(http.StatusServiceUnavailable, ErrorBody("unavailable",
			"Redis, which caches conversation memory, did not answer: nothing was erased; retry"))
		return
	}
	if err != nil {
		s.apiError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"erased": erased})
}

// PutRetention handles PUT /api/v1/tenants/:id/retention {"days": N}:
// message bodies older than N days are erased by conversa.retention; 0 or
// null keeps them forever.
func (s *Server) PutRetention(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	var req struct {
		// Raw, to tell a missing days (nil) from null, and 30 from 30.5 or "30".
		Days json.RawMessage `json:"days"`
	}
	if err := decodeJSON(c, &req); err != nil {
		s.apiError(c, err)
		return
	}
	if len(req.Days) == 0 {
		s.apiError(c, fieldErr("days", invalid("days is required: a whole number of days from 1 to %d, or 0 or null to keep message bodies forever", store.MaxRetentionDays)))
		return
	}
	days, err := retentionDays(req.Days)
	if err != nil {
		s.apiError(c, err)
		return
	}
	if err := store.SetRetention(c.Request.Context(), s.DB, tenantID, days); err != nil {
		s.apiError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"tenant_id": tenantID, "days": days, "keep_forever": days == nil})
}

// retentionDays reads "days": a whole number from 1 to MaxRetentionDays, or
// 0 or null for forever (nil).
func retentionDays(raw json.RawMessage) (*int, error) {
	if string(raw) == "null" {
		return nil, nil
	}
	n, err := strconv.Atoi(string(raw))
	if err != nil || n < 0 || n > store.MaxRetentionDays {
		return nil, fieldErr("days", invalid("days must be a whole number of days from 1 to %d, or 0 or null to keep message bodies forever", store.MaxRetentionDays))
	}
	if n == 0 {
		return nil, nil
	}
	return &n, nil
}
