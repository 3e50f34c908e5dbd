package api

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/store"
)

// CreateTenant handles POST /api/v1/tenants (operator only): the answer
// carries the tenant's API key, shown this once and stored only as a hash.
func (s *Server) CreateTenant(c *gin.Context) {
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeJSON(c, &req); err != nil {
		s.apiError(c, err)
		return
	}
	name, err := textField("name", req.Name, true, 200)
	if err != nil {
		s.apiError(c, err)
		return
	}
	t, keys, err := store.CreateTenant(c.Request.Context(), s.dbFor(c), s.Sealer, name)
	if err != nil {
		s.apiError(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{
		"id": t.ID, "name": t.Name, "credits": t.Credits, "reply_price": t.ReplyPrice,
		"created_at": t.CreatedAt, "api_key": keys.APIKey, "signing_secret": keys.SigningSecret,
	})
}

// RotateSigningSecret handles POST /api/v1/tenants/:id/signing-secret: a new
// signing secret, shown this once; the old one stays valid for 24 h, and
// until then requests carry a signature with each.
func (s *Server) RotateSigningSecret(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	secret, until, err := store.RotateSigningSecret(c.Request.Context(), s.dbFor(c), s.Sealer, tenantID)
	if err != nil {
		s.apiError(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"tenant_id": tenantID, "signing_secret": secret, "previous_valid_until": until})
}

// tenantParam is the :id of /tenants/:id/...; a tenant key naming another
// tenant gets 404, as if the tenant did not exist.
func tenantParam(c *gin.Context) (string, error) {
	id := c.Param("id")
	if !who(c).owns(id) {
		return "", store.ErrNotFound
	}
	return id, nil
}

// AddAccount handles POST /api/v1/tenants/:id/accounts: a Twilio account
// (token sealed at rest) and the numbers it serves for the tenant. For an
// account the tenant has, the numbers are added and the token replaced.
func (s *Server) AddAccount(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	var req struct {
		AccountSID string   `json:"account_sid"`
		AuthToken  string   `json:"auth_token"`
		Numbers    []string `json:"numbers"`
	}
	if err := decodeJSON(c, &req); err != nil {
		s.apiError(c, err)
		return
	}
	// SIDs are opaque: only emptiness and size are checked.
	sid, err := textField("account_sid", req.AccountSID, true, 128)
	if err != nil {
		s.apiError(c, err)
		return
	}
	token, err := textField("auth_token", req.AuthToken, true, 256)
	if err != nil {
		s.apiError(c, err)
		return
	}
	if len(req.Numbers) == 0 || len(req.Numbers) > 100 {
		s.apiError(c, invalid("numbers must list 1 to 100 numbers"))
		return
	}
	for i, n := range req.Numbers {
		req.Numbers[i] = strings.TrimSpace(n)
		if !store.ValidNumber(req.Numbers[i]) {
			s.apiError(c, invalid("numbers[%d] is not +E.164 (e.g. +15005550006) or whatsapp:+E.164", i))
			return
		}
	}
	sealed, err := s.Sealer.Seal(token)
	if err != nil {
		s.apiError(c, err)
		return
	}
	ctx := c.Request.Context()
	tx, err := s.dbFor(c).Begin(ctx)
	if err != nil {
		s.apiError(c, err)
		return
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	acc, err := store.AddAccount(ctx, tx, tenantID, sid, sealed, req.Numbers)
	if err != nil {
		s.apiError(c, err)
		return
	}
	if err := tx.Commit(ctx); err != nil {
		s.apiError(c, err)
		return
	}
	c.JSON(http.StatusCreated, acc)
}

// maxCredits bounds one top-up, so a typo cannot overflow a balance.
const maxCredits = 1_000_000_000

// AddCredits handles POST /api/v1/tenants/:id/credits (operator only).
func (s *Server) AddCredits(c *gin.Context) {
	var req struct {
		Amount *int64 `json:"amount"`
	}
	if err := decodeJSON(c, &req); err != nil {
		s.apiError(c, err)
		return
	}
	if req.Amount == nil || *req.Amount <= 0 || *req.Amount > maxCredits {
		s.apiError(c, invalid("amount must be a whole number from 1 to %d", maxCredits))
		return
	}
	balance, err := store.AddCredits(c.Request.Context(), s.dbFor(c), c.Param("id"), *req.Amount)
	if err != nil {
		s.apiError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"tenant_id": c.Param("id"), "balance": balance})
}

var (
	agentNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	toolNameRE  = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
)

// PutAgent handles PUT /api/v1/tenants/:id/agents/:name: it creates the
// agent or replaces its configuration (201 when created, 200 otherwise).
func (s *Server) PutAgent(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	var req AgentInput
	if err := decodeJSON(c, &req); err != nil {
		s.apiError(c, err)
		return
	}
	a, err := ValidateAgent(c.Param("name"), req, s.ToolsAllowPrivate)
	if err != nil {
		s.apiError(c, err)
		return
	}
	out, created, err := store.PutAgent(c.Request.Context(), s.DB, tenantID, a, req.IsDefault)
	if err != nil {
		s.apiError(c, err)
		return
	}
	putAnswer(c, created, out)
}

// keywords cleans a keyword list: at most 200, each 1-100 characters.
func keywords(field string, in []string) ([]string, error) {
	if len(in) > 200 {
		return nil, invalid("%s lists at most 200 keywords", field)
	}
	out := make([]string, 0, len(in))
	for i, k := range in {
		k, err := textField(fmt.Sprintf("%s[%d]", field, i), k, true, 100)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}
