package webhook

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/conversa/conversa/internal/media"
	"github.com/conversa/conversa/store"
)

// DB is the database the edge needs: queries, transactions and a ping.
// *pgxpool.Pool satisfies it.
type DB interface {
	store.DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
	Ping(ctx context.Context) error
}

// Inserter inserts River jobs inside the caller's transaction; *river.Client
// satisfies it (an insert-only client is enough).
type Inserter interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
	InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error)
}

// Deps is everything the HTTP edge depends on.
type Deps struct {
	DB     DB
	River  Inserter
	Sealer *store.Sealer
	Logger *slog.Logger
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
}

// server holds the handlers' shared dependencies.
type server struct {
	Deps
	group    *committer
	channels *channelCache
}

// MaxBodyBytes is the largest webhook body accepted (413 beyond).
const MaxBodyBytes = 64 << 10

// NewHandler returns the HTTP handler with every route in one place.
func NewHandler(d Deps) *gin.Engine {
	s, r := newServer(d)
	tw := r.Group("/twilio", s.observeWebhook, limitRejected(newIPLimiter(20, 200, s.Now)))
	tw.POST("/inbound", s.inbound)
	tw.POST("/status", s.status)

	// The operator API: every route authenticates; creating tenants and
	// adding credits are the operator's alone. Every creating POST honours
	// an Idempotency-Key (idempotent).
	api := r.Group("/api/v1", s.observeAPI, limitEveryRequest(newIPLimiter(100, 200, s.Now)), s.authenticate)
	api.POST("/tenants", s.requireAdmin, s.idempotent, s.createTenant)
	api.POST("/tenants/:id/accounts", s.idempotent, s.addAccount)
	api.POST("/tenants/:id/credits", s.requireAdmin, s.idempotent, s.addCredits)
	api.POST("/tenants/:id/signing-secret", s.rotateSigningSecret)
	api.PUT("/tenants/:id/agents/:name", s.putAgent)
	api.GET("/conversations", s.listConversations)
	api.GET("/conversations/:id/messages", s.listMessages)
	api.POST("/conversations/:id/messages", s.idempotent, s.sendMessage)
	api.POST("/conversations/:id/handoff", s.handoff)
	api.GET("/messages", s.findMessages)
	api.GET("/messages/:id/trace", s.trace)
	api.DELETE("/tenants/:id/contacts/:address", s.eraseContact)
	api.PUT("/tenants/:id/retention", s.putRetention)

	if s.RiverUI != nil {
		// Mounted at the full path: River UI strips its own prefix.
		ui := r.Group(RiverUIPrefix, s.requireAdminUI)
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
	d.PublicBaseURL = strings.TrimRight(d.PublicBaseURL, "/")
	if d.Memory == nil {
		d.Memory = store.NewMemory(d.Redis, store.MemoryPrefix, 0)
	}
	s := &server{Deps: d}
	s.group = &committer{s: s}
	s.channels = newChannelCache(d.Now)

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

// publicURL is the URL Twilio signed: PUBLIC_BASE_URL plus the request's path
// and query. A PUBLIC_BASE_URL with a path prefix (behind a proxy that strips
// it, or not) is honoured. The Host header is never used.
func (s *server) publicURL(r *http.Request) string {
	path := r.URL.Path
	if i := strings.Index(s.PublicBaseURL, "://"); i >= 0 {
		if j := strings.Index(s.PublicBaseURL[i+3:], "/"); j >= 0 {
			prefix := s.PublicBaseURL[i+3+j:]
			path = strings.TrimPrefix(path, prefix)
		}
	}
	u := s.PublicBaseURL + path
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	return u
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
