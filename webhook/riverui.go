package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"
)

// RiverUIPrefix is where River UI is mounted, page and API alike.
const RiverUIPrefix = "/riverui"

// NewRiverUI builds River UI for client (started or not: it only needs the
// pool) and starts its background services, which stop when ctx ends. Pass
// the handler in Deps.RiverUI: NewHandler mounts it at RiverUIPrefix behind
// the admin token, since River UI has no authentication of its own and can
// cancel, retry and delete jobs.
func NewRiverUI(ctx context.Context, client *river.Client[pgx.Tx], logger *slog.Logger) (http.Handler, error) {
	h, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(client, nil),
		Logger:    logger.With("component", "riverui"),
		Prefix:    RiverUIPrefix,
	})
	if err != nil {
		return nil, fmt.Errorf("river ui: %w", err)
	}
	if err := h.Start(ctx); err != nil {
		return nil, fmt.Errorf("start river ui: %w", err)
	}
	return h, nil
}
