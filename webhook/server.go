package webhook

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/conversa/conversa/internal/media"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/api"
	"github.com/conversa/conversa/webhook/edge"
	"github.com/conversa/conversa/webhook/hook"
)

// Deps is everything the HTTP edge depends on.
type Deps struct {
	DB edge.DB
	// StatusDB is the pool of Twilio's status callbacks (see
	// hook.Deps.StatusDB); nil means DB.
	StatusDB edge.DB
	River    edge.Inserter
	Sealer   *store.Sealer
	Logger   *slog.Logger
	// Redis is optional (nil = no Redis); /readyz reports it.
	Redis *redis.Client
	// Memory is the conversation memory an erasure clears; nil means the
	// one every process shares on Redis (store.MemoryPrefix).
	Memory *store.Memory
	// PublicBaseURL is the URL Twilio calls: signatures are checked against it.
	PublicBaseURL string
	// Debounce is the quiet window before a turn starts (0 = at once).
	Debounce time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// TrustedProxies may set X-Forwarded-For (nil: none; client IP is the peer).
	TrustedProxies []string
	// AdminToken admits the operator to /api/v1 (everything) and River UI;
	// empty admits no one.
	AdminToken string
	// RiverUI is NewRiverUI's handler, mounted at /riverui/ behind the admin
	// token; nil = no River UI.
	RiverUI http.Handler
	// Metrics records the edge's metrics and serves /metrics; nil = neither.
	Metrics *Metrics
	// MediaHosts is where inbound attachments may be (media.NewHosts of
	// TWILIO_API_URL); the zero value admits Twilio's own hosts only.
	MediaHosts media.Hosts
	// ToolsAllowPrivate admits agents' HTTP tool URLs on loopback and
	// private addresses (TOOLS_ALLOW_PRIVATE).
	ToolsAllowPrivate bool
}

// server holds the handlers' shared dependencies.
type server struct {
	Deps
}

// NewHandler returns the HTTP handler with every route in one place.
func NewHandler(d Deps) *gin.Engine {
	s, r := newServer(d)
	hooks := hook.New(hook.Deps{DB: d.DB, StatusDB: d.StatusDB, River: d.River, Sealer: d.Sealer, Logger: d.Logger,
		PublicBaseURL: d.PublicBaseURL, Debounce: d.Debounce, Now: s.Now, MediaHosts: d.MediaHosts})
	tw := r.Group("/twilio", s.observeWebhook, limitRejected(newIPLimiter(20, 200, s.Now)))
	tw.POST("/inbound", hooks.Inbound)
	tw.POST("/status", hooks.Status)

	// The operator API: every route authenticates; creating tenants and
	// adding credits are the operator's alone. Every creating POST honours
	// an Idempotency-Key (idempotent).
	a := api.New(api.Deps{DB: d.DB, River: d.River, Sealer: d.Sealer, Logger: d.Logger, Now: s.Now, AdminToken: d.AdminToken, Memory: s.Memory,
		ToolsAllowPrivate: d.ToolsAllowPrivate})
	v1 := r.Group("/api/v1", s.observeAPI, limitEveryRequest(newIPLimiter(100, 200, s.Now)), a.Authenticate)
	v1.POST("/tenants", a.RequireAdmin, a.Idempotent, a.CreateTenant)
	v1.POST("/tenants/:id/accounts", a.Idempotent, a.AddAccount)
	v1.POST("/tenants/:id/credits", a.RequireAdmin, a.Idempotent, a.AddCredits)
	v1.POST("/tenants/:id/signing-secret", a.RotateSigningSecret)
	v1.PUT("/tenants/:id/agents/:name", a.PutAgent)
	v1.PUT("/tenants/:id/knowledge", a.PutKnowledgeSettings)
	v1.GET("/tenants/:id/knowledge", a.ListKnowledge)
	v1.PUT("/tenants/:id/knowledge/:doc", a.PutKnowledge)
	v1.DELETE("/tenants/:id/knowledge/:doc", a.DeleteKnowledge)
	v1.GET("/conversations", a.ListConversations)
	v1.GET("/conversations/:id/messages", a.ListMessages)
	v1.POST("/conversations/:id/messages", a.Idempotent, a.SendMessage)
	v1.POST("/conversations/:id/handoff", a.Handoff)
	v1.GET("/messages", a.FindMessages)
	v1.GET("/messages/:id/trace", a.Trace)
	v1.DELETE("/tenants/:id/contacts/:address", a.DeleteContact)
	v1.PUT("/tenants/:id/retention", a.PutRetention)
	v1.GET("/tenants/:id/webhooks", a.ListWebhooks)
	v1.PUT("/tenants/:id/webhooks/:name", a.PutWebhook)
	v1.GET("/tenants/:id/webhooks/:name", a.GetWebhook)
	v1.DELETE("/tenants/:id/webhooks/:name", a.DeleteWebhook)
	v1.GET("/tenants/:id/events", a.ListEvents)
	// A broadcast honours its Idempotency-Key itself (in batches, not one transaction).
	v1.POST("/tenants/:id/broadcasts", a.CreateBroadcast)
	v1.GET("/broadcasts/:id", a.GetBroadcast)

	if s.RiverUI != nil {
		// Mounted at the full path: River UI strips its own prefix.
		ui := r.Group(RiverUIPrefix, a.RequireAdminUI)
		ui.Any("/*path", gin.WrapH(s.RiverUI))
	}
	return r
}

// NewWorkerHandler returns the handler of a process that only works jobs:
// /healthz, /readyz and /metrics. It needs DB, Logger, and optionally Redis
// and Metrics.
func NewWorkerHandler(d Deps) *gin.Engine {
	_, r := newServer(d)
	return r
}

// newServer builds the engine with the routes every process serves.
func newServer(d Deps) (*server, *gin.Engine) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Memory == nil {
		d.Memory = store.NewMemory(d.Redis, store.MemoryPrefix, 0)
	}
	s := &server{Deps: d}

	r := gin.New()
	r.Use(gin.Recovery())
	r.HandleMethodNotAllowed = true
	// Client IPs (for rate limits) come from the connection, never from
	// X-Forwarded-For, unless the proxies in front are named.
	_ = r.SetTrustedProxies(d.TrustedProxies)
	r.NoRoute(noRoute(http.StatusNotFound))
	r.NoMethod(noRoute(http.StatusMethodNotAllowed))

	r.GET("/healthz", s.healthz)
	r.GET("/readyz", s.readyz)
	if s.Metrics != nil {
		r.GET("/metrics", gin.WrapH(s.Metrics.handler()))
	}
	return s, r
}

func (s *server) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

func (s *server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	body := gin.H{"postgres": "ok", "redis": "disabled"}
	status := http.StatusOK
	if err := s.DB.Ping(ctx); err != nil {
		body["postgres"] = "down"
		status = http.StatusServiceUnavailable
	}
	if s.Redis != nil {
		body["redis"] = "ok"
		if err := s.Redis.Ping(ctx).Err(); err != nil {
			// Redis down is degraded, not unready: everything works from Postgres.
			body["redis"] = "down"
		}
	}
	body["status"] = map[int]string{http.StatusOK: "ready", http.StatusServiceUnavailable: "unready"}[status]
	c.JSON(status, body)
}

// noRoute answers unknown routes and methods: JSON under /api, text elsewhere.
func noRoute(status int) gin.HandlerFunc {
	return func(c *gin.Context) {
		if strings.HasPrefix(c.Request.URL.Path, "/api/") {
			code := map[int]string{http.StatusNotFound: "not_found", http.StatusMethodNotAllowed: "method_not_allowed"}[status]
			c.AbortWithStatusJSON(status, api.ErrorBody(code, http.StatusText(status)))
			return
		}
		c.String(status, http.StatusText(status)+"\n")
	}
}
