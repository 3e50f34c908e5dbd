package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/store"
)

// principal is who an API request acts for: the operator (admin token) or
// one tenant (its API key).
type principal struct {
	admin    bool
	tenantID string
}

// scope is the rows the principal may see.
func (p principal) scope() store.Scope {
	if p.admin {
		return store.AllTenants()
	}
	return store.TenantScope(p.tenantID)
}

// owns reports whether the principal may act on tenant id. For a tenant key
// another tenant's id is "not found", never "forbidden".
func (p principal) owns(tenantID string) bool {
	return p.admin || p.tenantID == tenantID
}

const principalKey = "conversa.principal"

// maxCredentialLen bounds what is hashed and compared: no key is this long.
const maxCredentialLen = 256

// credential reads the token from "Authorization: Bearer <token>" or HTTP
// basic auth; basic auth names user "admin" (tenant keys go as Bearer).
func credential(r *http.Request) (token string, basicAdmin bool, ok bool) {
	if user, pass, isBasic := r.BasicAuth(); isBasic {
		return pass, true, user == "admin" && pass != "" && len(pass) <= maxCredentialLen
	}
	h := r.Header.Get("Authorization")
	scheme, tok, found := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !found || !strings.EqualFold(scheme, "Bearer") || tok == "" || len(tok) > maxCredentialLen {
		return "", false, false
	}
	return tok, false, true
}

// isAdminToken compares in constant time (hashes first, so the length of
// the admin token does not leak either). An empty admin token admits no one.
func (s *Server) isAdminToken(tok string) bool { return AdminTokenMatches(s.AdminToken, tok) }

// AdminTokenMatches reports whether tok is the admin token, in constant time.
func AdminTokenMatches(adminToken, tok string) bool {
	if adminToken == "" {
		return false
	}
	a, b := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(adminToken))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// RequireAdminUI guards River UI, page and API alike: the admin token only,
// never a tenant key (River UI sees every tenant's jobs and can cancel them).
// Browsers get a basic-auth prompt.
func (s *Server) RequireAdminUI(c *gin.Context) {
	tok, _, ok := credential(c.Request)
	if !ok || !s.isAdminToken(tok) {
		c.Header("WWW-Authenticate", `Basic realm="conversa", charset="UTF-8"`)
		c.AbortWithStatusJSON(http.StatusUnauthorized, ErrorBody("unauthorized", "admin credentials required"))
		return
	}
	c.Next()
}

// Authenticate resolves the API caller: the admin token, or a tenant API key
// looked up by its hash. Anything else is 401.
func (s *Server) Authenticate(c *gin.Context) {
	tok, basicAdmin, ok := credential(c.Request)
	if !ok {
		c.Header("WWW-Authenticate", `Bearer realm="conversa"`)
		s.apiError(c, errUnauthorized)
		return
	}
	if s.isAdminToken(tok) {
		c.Set(principalKey, principal{admin: true})
		c.Next()
		return
	}
	if basicAdmin {
		s.apiError(c, errUnauthorized)
		return
	}
	t, err := store.TenantByAPIKeyHash(c.Request.Context(), s.DB, store.HashAPIKey(tok))
	if errors.Is(err, store.ErrNotFound) {
		c.Header("WWW-Authenticate", `Bearer realm="conversa", error="invalid_token"`)
		s.apiError(c, errUnauthorized)
		return
	}
	if err != nil {
		s.apiError(c, err)
		return
	}
	c.Set(principalKey, principal{tenantID: t.ID})
	c.Next()
}

// RequireAdmin lets only the operator through (tenant keys get 403).
func (s *Server) RequireAdmin(c *gin.Context) {
	if !who(c).admin {
		s.apiError(c, errAdminOnly)
		return
	}
	c.Next()
}

// who returns the principal authenticate stored.
func who(c *gin.Context) principal {
	p, _ := c.Get(principalKey)
	pr, _ := p.(principal)
	return pr
}
