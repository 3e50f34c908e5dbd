package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/edge"
)

// API errors a handler returns; apiError maps them (and store's sentinels)
// to a status and a stable code, once.
var (
	errUnauthorized = errors.New("missing or invalid credentials")
	errAdminOnly    = errors.New("this endpoint needs the admin token")
	errInvalid      = errors.New("invalid request")
)

// invalid is a validation error: 400 with its message shown to the caller.
func invalid(format string, args ...any) error {
	return store.Refuse(errInvalid, fmt.Sprintf(format, args...))
}

// ErrorBody is the API's error shape: {"error":{"code":..., "message":...}}.
func ErrorBody(code, message string) gin.H {
	return gin.H{"error": gin.H{"code": code, "message": message}}
}

// apiError answers {"error":{"code","message"}} with the status err maps to.
// Only server-side failures are logged; their text is not shown.
func (s *Server) apiError(c *gin.Context, err error) {
	status, code, msg := http.StatusInternalServerError, "internal", "internal error"
	switch {
	case errors.Is(err, errUnauthorized):
		status, code, msg = http.StatusUnauthorized, "unauthorized", err.Error()
	case errors.Is(err, errAdminOnly):
		status, code, msg = http.StatusForbidden, "forbidden", err.Error()
	case errors.Is(err, edge.ErrTooLarge):
		status, code, msg = http.StatusRequestEntityTooLarge, "too_large", tooLarge{edge.MaxBodyBytes}.Error()
		var tl tooLarge
		if errors.As(err, &tl) {
			msg = tl.Error()
		}
	case errors.Is(err, errInvalid):
		status, code, msg = http.StatusBadRequest, "invalid_request", store.RefusalReason(err)
	case errors.Is(err, store.ErrNotFound):
		status, code, msg = http.StatusNotFound, "not_found", "not found"
	case errors.Is(err, store.ErrDuplicate), errors.Is(err, store.ErrConflict):
		status, code, msg = http.StatusConflict, "conflict", conflictMessage(err)
	}
	if status >= 500 {
		s.Logger.LogAttrs(c.Request.Context(), slog.LevelError, "api request failed",
			slog.String("route", c.FullPath()), slog.String("error", err.Error()))
	}
	c.AbortWithStatusJSON(status, ErrorBody(code, msg))
}

// conflictMessage is a conflict's reason (store.Refusal), or "conflict".
func conflictMessage(err error) string {
	if reason := store.RefusalReason(err); reason != "" {
		return reason
	}
	return "conflict"
}

// decodeJSON reads one JSON object of at most edge.MaxBodyBytes into v; unknown
// fields, wrong types and trailing data are 400 with a readable reason.
func decodeJSON(c *gin.Context, v any) error {
	return decodeJSONUpTo(c, v, edge.MaxBodyBytes)
}

// tooLarge is a body over a route's own limit (413).
type tooLarge struct{ limit int64 }

func (e tooLarge) Error() string { return fmt.Sprintf("request body over %d KiB", e.limit>>10) }
func (e tooLarge) Unwrap() error { return edge.ErrTooLarge }

// decodeJSONUpTo is decodeJSON for a route that takes bodies up to limit.
func decodeJSONUpTo(c *gin.Context, v any, limit int64) error {
	body, err := edge.ReadBodyUpTo(c, limit)
	if errors.Is(err, edge.ErrTooLarge) {
		return tooLarge{limit}
	}
	if err != nil {
		return invalid("could not read the body")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return invalid("the body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return invalid("field %q must be %s", typeErr.Field, jsonType(typeErr.Type.Kind().String()))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			// encoding/json reports an unknown field as text only (no typed
			// error for it); this is the one place that reads it.
			return invalid("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		default:
			return invalid("the body is not a valid JSON object")
		}
	}
	if dec.More() {
		return invalid("the body must hold one JSON object")
	}
	return nil
}

// putAnswer answers a PUT that creates or replaces a resource: 201 with it
// when the PUT created it, 200 when it replaced one.
func putAnswer(c *gin.Context, created bool, v any) {
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	c.JSON(status, v)
}

// jsonType names a Go kind the way a JSON client thinks of it.
func jsonType(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"), strings.HasPrefix(kind, "float"):
		return "a number"
	case kind == "string":
		return "a string"
	case kind == "bool":
		return "true or false"
	case kind == "slice":
		return "an array"
	default:
		return "an object"
	}
}

// pathID parses a numeric id from the path; anything else names no row.
func pathID(c *gin.Context, name string) (int64, error) {
	id, err := strconv.ParseInt(c.Param(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, store.ErrNotFound
	}
	return id, nil
}

// Lists are paginated by an opaque cursor: the last id of the previous page.
const (
	defaultLimit = 50
	maxLimit     = 200
)

// readPage reads limit and cursor from the query.
func readPage(c *gin.Context) (limit int, after int64, err error) {
	limit = defaultLimit
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return 0, 0, invalid("limit must be a whole number from 1 to %d", maxLimit)
		}
		limit = n
	}
	if v := c.Query("cursor"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		id, perr := strconv.ParseInt(strings.TrimPrefix(string(b), "id:"), 10, 64)
		if err != nil || !strings.HasPrefix(string(b), "id:") || perr != nil || id <= 0 {
			return 0, 0, invalid("cursor is not one this API returned")
		}
		after = id
	}
	return limit, after, nil
}

func encodeCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("id:" + strconv.FormatInt(id, 10)))
}

// writeList answers {"items": [...], "next_cursor": ...}; the query asked for
// limit+1 rows, so a further page exists exactly when that many came back.
func writeList[T any](c *gin.Context, items []T, limit int, id func(T) int64) {
	var next *string
	if len(items) > limit {
		items = items[:limit]
		cur := encodeCursor(id(items[limit-1]))
		next = &cur
	}
	if items == nil {
		items = []T{}
	}
	c.JSON(http.StatusOK, gin.H{"items": items, "next_cursor": next})
}

// textField cleans and bounds a string field: valid UTF-8, no NUL, trimmed.
func textField(field, v string, required bool, maxRunes int) (string, error) {
	v = strings.TrimSpace(edge.Clean(v))
	if required && v == "" {
		return "", invalid("%s is required", field)
	}
	if n := len([]rune(v)); n > maxRunes {
		return "", invalid("%s is longer than %d characters", field, maxRunes)
	}
	return v, nil
}
