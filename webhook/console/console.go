package console

import (
	"bytes"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/api"
	"github.com/conversa/conversa/webhook/edge"
)

// Prefix is where the console is mounted.
const Prefix = "/console"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Deps is what the console needs.
type Deps struct {
	DB     edge.DB
	River  edge.Inserter
	Logger *slog.Logger
	// AdminToken signs the operator in to the tenant picker; empty: tenant
	// keys only.
	AdminToken string
	// Secure marks cookies Secure: set it when PUBLIC_BASE_URL is https.
	Secure bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// PollEvery is how often open pages ask for new messages (2 s when zero).
	PollEvery time.Duration
}

// Handler serves the console.
type Handler struct {
	Deps
	pages map[string]*template.Template
}

// Mount registers the console's routes under Prefix on r.
func Mount(r gin.IRouter, d Deps) error {
	h, err := newHandler(d)
	if err != nil {
		return err
	}
	g := r.Group(Prefix, securityHeaders)
	static, _ := fs.Sub(staticFS, "static")
	g.StaticFS("/static", http.FS(static))
	g.GET("/", func(c *gin.Context) { h.redirect(c, Prefix+"/conversations") })
	g.GET("/login", h.loginPage)
	g.POST("/login", h.login)

	in := g.Group("", h.requireSession)
	in.POST("/logout", h.logout)
	in.GET("/tenants", h.tenantsPage)
	in.POST("/tenants", h.pickTenant)

	t := in.Group("", h.requireTenant)
	t.GET("/conversations", h.conversationsPage)
	t.GET("/conversations/:id", h.conversationPage)
	t.POST("/conversations/:id/takeover", h.handoff(store.ConversationHuman))
	t.POST("/conversations/:id/handback", h.handoff(store.ConversationBot))
	t.POST("/conversations/:id/reply", h.reply)
	t.GET("/messages/:id/trace", h.tracePage)
	t.GET("/agents", h.agentsPage)
	t.GET("/agents/:name", h.agentPage)
	t.POST("/agents/:name", h.saveAgent)
	t.GET("/usage", h.usagePage)
	return nil
}

func newHandler(d Deps) (*Handler, error) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.PollEvery <= 0 {
		d.PollEvery = 2 * time.Second
	}
	h := &Handler{Deps: d, pages: map[string]*template.Template{}}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		h.pages[name] = t
	}
	return h, nil
}

// securityHeaders keeps every page to this origin: no inline script, no
// framing, no referrer carrying ids elsewhere.
func securityHeaders(c *gin.Context) {
	hd := c.Writer.Header()
	hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("Cache-Control", "no-store")
	c.Next()
}

// pageData is what every page's template sees.
type pageData struct {
	Title   string
	Nav     string
	Session *session
	CSRF    string
	Error   string
	// Fragment renders only the page's "main" block (htmx polling).
	Fragment  bool
	PollEvery int64
	Data      any
}

// page renders a page (or, when the request asks for a fragment, its
// "fragment" block) with status.
func (h *Handler) page(c *gin.Context, status int, name string, d pageData) {
	if s, ok := c.Get(sessionKey); ok {
		sess := s.(session)
		d.Session, d.CSRF = &sess, sess.CSRFToken
	}
	d.PollEvery = h.PollEvery.Milliseconds()
	t := h.pages[name]
	block := "layout"
	if d.Fragment {
		block = "fragment"
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, block, d); err != nil {
		h.Logger.Error("console template failed", "page", name, "error", err.Error())
		c.String(http.StatusInternalServerError, "internal error\n")
		return
	}
	c.Data(status, "text/html; charset=utf-8", buf.Bytes())
}

// redirect sends the browser on with 303 (after a POST, the page is read
// again with GET); htmx requests get HX-Redirect so a polled fragment never
// swaps a whole page into itself.
func (h *Handler) redirect(c *gin.Context, to string) {
	if c.GetHeader("HX-Request") == "true" && c.Request.Method == http.MethodGet {
		c.Header("HX-Redirect", to)
		c.Status(http.StatusNoContent)
		return
	}
	c.Redirect(http.StatusSeeOther, to)
}

// fail answers an error: not found is a 404 page (another tenant's id
// included), a conflict or bad input is shown as it is, anything else is
// logged and a 500 page.
func (h *Handler) fail(c *gin.Context, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		h.page(c, http.StatusNotFound, "error", pageData{Title: "Not found", Error: "There is nothing here, or it belongs to another tenant."})
	case errors.Is(err, api.ErrInvalid):
		h.page(c, http.StatusBadRequest, "error", pageData{Title: "Invalid", Error: shownError(err)})
	case errors.Is(err, store.ErrConflict):
		h.page(c, http.StatusConflict, "error", pageData{Title: "Not possible", Error: shownError(err)})
	default:
		h.Logger.LogAttrs(c.Request.Context(), slog.LevelError, "console request failed",
			slog.String("route", c.FullPath()), slog.String("error", err.Error()))
		h.page(c, http.StatusInternalServerError, "error", pageData{Title: "Error", Error: "Something went wrong on our side; nothing was changed. Try again."})
	}
}

// shownError is an ErrInvalid or ErrConflict error's reason (its
// store.Refusal), or its whole text when it gives none.
func shownError(err error) string {
	if reason := store.RefusalReason(err); reason != "" {
		return reason
	}
	return err.Error()
}
