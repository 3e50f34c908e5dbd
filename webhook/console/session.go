package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/api"
)

const (
	// sessionCookie holds the session's random token (its hash is the key
	// of console_sessions).
	sessionCookie = "conversa_console"
	// loginCookie is the sign-in form's double-submit CSRF token: there is
	// no session yet to hold one.
	loginCookie = "conversa_console_login"
	// sessionTTL is how long a sign-in lasts.
	sessionTTL = 12 * time.Hour
	// maxKeyLen bounds what is hashed and compared: no key is this long.
	maxKeyLen = 256
)

// session is the signed-in browser a request comes from.
type session struct {
	store.ConsoleSession
	tokenHash []byte
}

// scope is the rows the session may see: its tenant's only. An admin who
// has not picked a tenant sees nothing.
func (s session) scope() store.Scope {
	if s.TenantID == nil {
		return store.Scope{}
	}
	return store.TenantScope(*s.TenantID)
}

func (s session) tenantID() string {
	if s.TenantID == nil {
		return ""
	}
	return *s.TenantID
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashToken(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// setCookie sets an HttpOnly, SameSite=Lax cookie on /console/, Secure when
// the console is served over https. maxAge < 0 deletes it.
func (h *Handler) setCookie(c *gin.Context, name, value string, maxAge int) {
	http.SetCookie(c.Writer, &http.Cookie{
		Name: name, Value: value, Path: Prefix + "/", MaxAge: maxAge,
		HttpOnly: true, Secure: h.Secure, SameSite: http.SameSiteLaxMode,
	})
}

// errBadKey is a sign-in with a key that is neither a tenant's nor the admin token.
var errBadKey = errors.New("that API key is not valid")

// signIn checks key and opens a session: a tenant's API key signs in to that
// tenant, the admin token to the tenant picker.
func (h *Handler) signIn(c *gin.Context, key string) (session, error) {
	key = strings.TrimSpace(key)
	if key == "" || len(key) > maxKeyLen {
		return session{}, errBadKey
	}
	s := store.ConsoleSession{CSRFToken: randomToken(), ExpiresAt: h.Now().Add(sessionTTL)}
	if api.AdminTokenMatches(h.AdminToken, key) {
		s.Admin = true
	} else {
		t, err := store.TenantByAPIKeyHash(c.Request.Context(), h.DB, store.HashAPIKey(key))
		if errors.Is(err, store.ErrNotFound) {
			return session{}, errBadKey
		}
		if err != nil {
			return session{}, err
		}
		s.TenantID = &t.ID
	}
	tok := randomToken()
	if err := store.CreateConsoleSession(c.Request.Context(), h.DB, hashToken(tok), s); err != nil {
		return session{}, err
	}
	h.setCookie(c, sessionCookie, tok, int(sessionTTL/time.Second))
	return session{ConsoleSession: s, tokenHash: hashToken(tok)}, nil
}

const sessionKey = "conversa.console.session"

// requireSession loads the session from its cookie, or sends the browser to
// the sign-in page. A state-changing request must carry the session's CSRF
// token (form field csrf_token or header X-CSRF-Token), or it is refused
// with 403 and changes nothing.
func (h *Handler) requireSession(c *gin.Context) {
	tok, err := c.Cookie(sessionCookie)
	var s store.ConsoleSession
	if err == nil && tok != "" && len(tok) <= maxKeyLen {
		s, err = store.ConsoleSessionByHash(c.Request.Context(), h.DB, hashToken(tok), h.Now())
	} else {
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		h.redirect(c, Prefix+"/login")
		c.Abort()
		return
	}
	if err != nil {
		h.fail(c, err)
		c.Abort()
		return
	}
	if c.Request.Method != http.MethodGet && c.Request.Method != http.MethodHead {
		sent := c.GetHeader("X-CSRF-Token")
		if sent == "" {
			sent = c.PostForm("csrf_token")
		}
		if !sameToken(sent, s.CSRFToken) {
			h.page(c, http.StatusForbidden, "error", pageData{Error: "This form has expired or did not come from this console. Reload the page and try again."})
			c.Abort()
			return
		}
	}
	c.Set(sessionKey, session{ConsoleSession: s, tokenHash: hashToken(tok)})
	c.Next()
}

// requireTenant sends an admin who has not picked a tenant to the picker.
func (h *Handler) requireTenant(c *gin.Context) {
	if current(c).TenantID == nil {
		h.redirect(c, Prefix+"/tenants")
		c.Abort()
		return
	}
	c.Next()
}

func current(c *gin.Context) session {
	v, _ := c.Get(sessionKey)
	s, _ := v.(session)
	return s
}
