package hook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/internal/twilio/signature"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/edge"
)

const emptyTwiML = `<?xml version="1.0" encoding="UTF-8"?><Response/>`

// errBadRequest and errForbidden are decoding outcomes mapped to 400 and 403.
var (
	errBadRequest = errors.New("bad request")
	errForbidden  = errors.New("forbidden")
)

// readForm reads a form-encoded Twilio webhook body of at most edge.MaxBodyBytes.
func readForm(c *gin.Context) (url.Values, error) {
	body, err := edge.ReadBody(c)
	if errors.Is(err, edge.ErrTooLarge) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read body", errBadRequest)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("%w: body is not form-encoded", errBadRequest)
	}
	return form, nil
}

// decodeInbound turns a Twilio inbound form into a store.Inbound (without
// tenant and channel, which come from To).
func decodeInbound(form url.Values) (store.Inbound, string, string, error) {
	sid, from, to := edge.Clean(form.Get("MessageSid")), edge.Clean(form.Get("From")), edge.Clean(form.Get("To"))
	var missing []string
	for _, f := range []struct{ name, v string }{{"MessageSid", sid}, {"From", from}, {"To", to}} {
		if strings.TrimSpace(f.v) == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return store.Inbound{}, "", "", fmt.Errorf("%w: missing %s", errBadRequest, strings.Join(missing, ", "))
	}
	in := store.Inbound{
		MessageSID:  sid,
		From:        from,
		WaID:        edge.Clean(form.Get("WaId")),
		ProfileName: edge.Clean(form.Get("ProfileName")),
		Body:        edge.Clean(form.Get("Body")),
	}
	media, err := decodeMedia(form)
	if err != nil {
		return store.Inbound{}, "", "", err
	}
	in.Media = media
	in.OptOut = optKeyword(in.Body)
	return in, to, edge.Clean(form.Get("AccountSid")), nil
}

// resolve finds the channel a webhook is for and checks its signature with the
// auth token of the account that owns the number. A recently resolved channel
// comes from the cache; a request that does not match the cached entry is
// checked again against the database before it is refused.
func (s *Server) resolve(ctx context.Context, r *http.Request, form url.Values, to, accountSID string) (store.Channel, error) {
	if e, ok := s.channels.get(to); ok {
		if (accountSID == "" || accountSID == e.ch.AccountSID) &&
			signature.Valid(e.token, s.publicURL(r), form, r.Header.Get("X-Twilio-Signature")) {
			return e.ch, nil
		}
		s.channels.forget(to)
	}
	ch, token, err := s.lookupChannel(ctx, to)
	if errors.Is(err, store.ErrNotFound) {
		return ch, fmt.Errorf("%w: number not served", errForbidden)
	}
	if err != nil {
		return ch, fmt.Errorf("resolve channel: %w", err)
	}
	if accountSID != "" && accountSID != ch.AccountSID {
		return ch, fmt.Errorf("%w: account does not own the number", errForbidden)
	}
	if !signature.Valid(token, s.publicURL(r), form, r.Header.Get("X-Twilio-Signature")) {
		return ch, fmt.Errorf("%w: bad signature", errForbidden)
	}
	return ch, nil
}

// Inbound handles POST /twilio/inbound: it answers Twilio only once the
// message and the job that will answer it are committed together.
func (s *Server) Inbound(c *gin.Context) {
	ctx := c.Request.Context()
	form, err := readForm(c)
	if err != nil {
		s.webhookError(c, "inbound", err)
		return
	}
	in, to, accountSID, err := decodeInbound(form)
	if err != nil {
		s.webhookError(c, "inbound", err)
		return
	}
	ch, err := s.resolve(ctx, c.Request, form, to, accountSID)
	if err != nil {
		s.webhookError(c, "inbound", err)
		return
	}
	if err := s.checkMediaHosts(in.Media); err != nil {
		s.webhookError(c, "inbound", err)
		return
	}
	in.TenantID, in.ChannelID = ch.TenantID, ch.ID
	in.Event = map[string]any{"channel": ch.Kind, "num_media": len(in.Media)}

	res, err := s.ingest(ctx, in)
	if err != nil {
		s.webhookError(c, "inbound", err)
		return
	}
	log := s.Logger.With("tenant_id", ch.TenantID, "message_sid", in.MessageSID)
	if res.Duplicate {
		markOutcome(c, OutcomeDuplicate)
		log.Info("inbound duplicate suppressed")
	} else {
		log.Info("inbound stored", "message_id", res.MessageID, "conversation_id", res.ConversationID)
	}
	c.Data(http.StatusOK, "text/xml; charset=utf-8", []byte(emptyTwiML))
}

// ingest commits the message and its turn job, grouped with concurrent
// requests into one transaction (see ingest.go).
func (s *Server) ingest(ctx context.Context, in store.Inbound) (store.InboundResult, error) {
	return s.group.ingest(ctx, in)
}

// webhookError maps an error to the status Twilio should see. Client errors
// are 4xx; anything else means the database could not take the message, and
// 503 tells Twilio (or its fallback) to try again. Nothing was committed.
func (s *Server) webhookError(c *gin.Context, hook string, err error) {
	status := http.StatusServiceUnavailable
	switch {
	case errors.Is(err, edge.ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, errBadRequest):
		status = http.StatusBadRequest
	case errors.Is(err, errForbidden):
		status = http.StatusForbidden
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	s.Logger.Log(c.Request.Context(), level, "webhook rejected", "hook", hook, "status", status, "error", err.Error())
	c.String(status, http.StatusText(status)+"\n")
}
