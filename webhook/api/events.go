package api

import (
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/internal/egress"
	"github.com/conversa/conversa/store"
)

// Event webhooks (README, "Event webhooks"): a tenant's endpoints, and its
// events for catching up.

var endpointNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// maxEndpoints bounds a tenant's endpoints (each event is a job per endpoint).
const maxEndpoints = 20

// EndpointInput is an endpoint as an operator submits it.
type EndpointInput struct {
	URL           string   `json:"url"`
	Events        []string `json:"events"`
	IncludeBodies bool     `json:"include_bodies"`
}

// ValidateEndpoint checks an endpoint: its name, an http(s) URL Conversa
// may call (private and loopback hosts only with allowPrivate), and known
// event types (none or an empty list: every type).
func ValidateEndpoint(tenantID, name string, in EndpointInput, allowPrivate bool) (store.Endpoint, error) {
	if !endpointNameRE.MatchString(name) {
		return store.Endpoint{}, invalid("name must be 1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit")
	}
	url := strings.TrimSpace(in.URL)
	if url == "" {
		return store.Endpoint{}, invalid("url is required")
	}
	if len(url) > 2048 {
		return store.Endpoint{}, invalid("url is over 2048 characters")
	}
	if err := egress.CheckURL(url, allowPrivate); err != nil {
		return store.Endpoint{}, invalid("url: %s", strings.TrimPrefix(err.Error(), egress.ErrRefused.Error()+": "))
	}
	e := store.Endpoint{TenantID: tenantID, Name: name, URL: url, IncludeBodies: in.IncludeBodies}
	for i, t := range in.Events {
		if !slices.Contains(store.EventTypes, t) {
			return store.Endpoint{}, invalid("events[%d]: %q is not an event type (%s)", i, t, strings.Join(store.EventTypes, ", "))
		}
		if !slices.Contains(e.Events, t) {
			e.Events = append(e.Events, t)
		}
	}
	return e, nil
}

// PutWebhook handles PUT /api/v1/tenants/:id/webhooks/:name: creates (201)
// or replaces (200) an endpoint.
func (s *Server) PutWebhook(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	var req EndpointInput
	if err := decodeJSON(c, &req); err != nil {
		s.apiError(c, err)
		return
	}
	e, err := ValidateEndpoint(tenantID, c.Param("name"), req, s.ToolsAllowPrivate)
	if err != nil {
		s.apiError(c, err)
		return
	}
	ctx := c.Request.Context()
	list, err := store.ListEndpoints(ctx, s.DB, tenantID)
	if err != nil {
		s.apiError(c, err)
		return
	}
	if len(list) >= maxEndpoints && !slices.ContainsFunc(list, func(x store.Endpoint) bool { return x.Name == e.Name }) {
		s.apiError(c, store.Refuse(store.ErrConflict, "a tenant has at most "+strconv.Itoa(maxEndpoints)+" webhook endpoints"))
		return
	}
	e, created, err := store.PutEndpoint(ctx, s.DB, e)
	if err != nil {
		s.apiError(c, err)
		return
	}
	putAnswer(c, created, e)
}

// GetWebhook handles GET /api/v1/tenants/:id/webhooks/:name.
func (s *Server) GetWebhook(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	e, err := store.GetEndpoint(c.Request.Context(), s.DB, tenantID, c.Param("name"))
	if err != nil {
		s.apiError(c, err)
		return
	}
	c.JSON(http.StatusOK, e)
}

// ListWebhooks handles GET /api/v1/tenants/:id/webhooks: every endpoint, by name.
func (s *Server) ListWebhooks(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	list, err := store.ListEndpoints(c.Request.Context(), s.DB, tenantID)
	if err != nil {
		s.apiError(c, err)
		return
	}
	if list == nil {
		list = []store.Endpoint{}
	}
	c.JSON(http.StatusOK, gin.H{"items": list})
}

// DeleteWebhook handles DELETE /api/v1/tenants/:id/webhooks/:name (204);
// the endpoint's undelivered events are dropped.
func (s *Server) DeleteWebhook(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	if err := store.DeleteEndpoint(c.Request.Context(), s.DB, tenantID, c.Param("name")); err != nil {
		s.apiError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// ListEvents handles GET /api/v1/tenants/:id/events?after=<event id>&limit=
// [&include_bodies=true]: the tenant's events in the order they committed,
// for a receiver catching up; next_after is the after of the next call (the
// last event listed), has_more says whether more are there already.
func (s *Server) ListEvents(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	limit, _, err := readPage(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	var after int64
	if v := c.Query("after"); v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			s.apiError(c, invalid("after must be an event id"))
			return
		}
	}
	bodies := false
	if v := c.Query("include_bodies"); v != "" {
		if bodies, err = strconv.ParseBool(v); err != nil {
			s.apiError(c, invalid("include_bodies must be true or false"))
			return
		}
	}
	list, err := store.ListEvents(c.Request.Context(), s.DB, tenantID, after, limit, bodies)
	if errors.Is(err, store.ErrNotFound) && store.RefusalReason(err) != "" {
		s.apiError(c, invalid("%s", store.RefusalReason(err)))
		return
	}
	if err != nil {
		s.apiError(c, err)
		return
	}
	more := len(list) > limit
	if more {
		list = list[:limit]
	}
	next := after
	if len(list) > 0 {
		next = list[len(list)-1].ID
	}
	if list == nil {
		list = []store.EventPayload{}
	}
	c.JSON(http.StatusOK, gin.H{"items": list, "next_after": next, "has_more": more})
}
