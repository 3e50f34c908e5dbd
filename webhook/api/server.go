package api

import (
	"log/slog"
	"time"

	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/edge"
)

// Deps is everything the operator API depends on.
type Deps struct {
	DB     edge.DB
	River  edge.Inserter
	Sealer *store.Sealer
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// AdminToken admits the operator to /api/v1 (everything) and River UI;
	// empty admits no one.
	AdminToken string
	// ToolsAllowPrivate admits agents' HTTP tool URLs on loopback and
	// private addresses (TOOLS_ALLOW_PRIVATE).
	ToolsAllowPrivate bool
	// Memory is the conversation memory an erasure clears (Redis; a nil
	// client inside means no Redis).
	Memory *store.Memory
}

// Server is the operator API's handlers and middleware; webhook.NewHandler
// mounts them under /api/v1 (and RequireAdminUI in front of River UI).
type Server struct {
	Deps
}

// New returns the operator API for d.
func New(d Deps) *Server {
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Server{Deps: d}
}
