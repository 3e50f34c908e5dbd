package hook

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/internal/media"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/edge"
)

// Deps is everything Twilio's webhooks depend on.
type Deps struct {
	DB edge.DB
	// StatusDB is the status callbacks' database, a pool of their own so
	// that a callback never queues for a connection behind inbound webhooks
	// and API requests: Twilio gives a callback one try, and one that times
	// out or gets a 503 while the edge is busy is lost (a stuck status until
	// reconciliation). Nil means DB.
	StatusDB edge.DB
	River    edge.Inserter
	Sealer   *store.Sealer
	Logger   *slog.Logger
	// PublicBaseURL is the URL Twilio calls: signatures are checked against it.
	PublicBaseURL string
	// Debounce is the quiet window before a turn starts (0 = at once).
	Debounce time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MediaHosts is where inbound attachments may be (media.NewHosts of
	// TWILIO_API_URL); the zero value admits Twilio's own hosts only.
	MediaHosts media.Hosts
}

// Server holds the hooks' shared dependencies: the group committer and the
// look-up caches live as long as it does. Its handlers are Inbound and Status;
// webhook.NewHandler mounts them.
type Server struct {
	Deps
	group    *committer
	channels *ttlCache[string, cachedChannel]
	// targets caches status callbacks' messages by id (?m=).
	targets *ttlCache[int64, cachedTarget]
}

// New returns the Twilio hooks for d.
func New(d Deps) *Server {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.StatusDB == nil {
		d.StatusDB = d.DB
	}
	d.PublicBaseURL = strings.TrimRight(d.PublicBaseURL, "/")
	s := &Server{Deps: d}
	s.group = &committer{s: s}
	s.channels = newTTLCache[string, cachedChannel](d.Now)
	s.targets = newTTLCache[int64, cachedTarget](d.Now)
	return s
}

// publicURL is the URL Twilio signed: PUBLIC_BASE_URL plus the request's path
// and query. A PUBLIC_BASE_URL with a path prefix (behind a proxy that strips
// it, or not) is honoured. The Host header is never used.
func (s *Server) publicURL(r *http.Request) string {
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

const outcomeKey = "conversa.outcome"

// OutcomeDuplicate is the outcome of a redelivered webhook that changed
// nothing: it answers 200 like a new message, so its status does not say.
const OutcomeDuplicate = "duplicate"

// markOutcome names how a webhook ended when its status alone does not say.
func markOutcome(c *gin.Context, outcome string) { c.Set(outcomeKey, outcome) }

// Outcome is how the webhook of c ended when its status alone does not say
// (OutcomeDuplicate), or "" (the metrics derive it from the status).
func Outcome(c *gin.Context) string { return c.GetString(outcomeKey) }
