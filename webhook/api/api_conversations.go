package api

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/store"
)

// uuidRE matches a tenant id.
var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// ListConversations handles GET /api/v1/conversations?status=&limit=&cursor=
// (and, for the operator, &tenant_id=), newest first.
func (s *Server) ListConversations(c *gin.Context) {
	limit, before, err := readPage(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	status := store.ConversationStatus(c.Query("status"))
	if status != "" && !status.Valid() {
		s.apiError(c, invalid("status must be bot, human or closed"))
		return
	}
	scope := who(c).scope()
	if id := c.Query("tenant_id"); id != "" {
		// The operator may narrow the list to one tenant; a tenant key
		// naming another tenant sees nothing.
		if !uuidRE.MatchString(id) {
			s.apiError(c, invalid("tenant_id is not a tenant id"))
			return
		}
		if !who(c).owns(id) {
			writeList(c, []store.ConversationView{}, limit, nil)
			return
		}
		scope = store.TenantScope(id)
	}
	items, err := store.ListConversations(c.Request.Context(), s.DB, scope, store.ConversationFilter{
		Status: status, BeforeID: before, Limit: limit + 1,
	})
	if err != nil {
		s.apiError(c, err)
		return
	}
	writeList(c, items, limit, func(v store.ConversationView) int64 { return v.ID })
}

// ListMessages handles GET /api/v1/conversations/:id/messages, oldest first.
func (s *Server) ListMessages(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.apiError(c, err)
		return
	}
	limit, after, err := readPage(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	ctx, scope := c.Request.Context(), who(c).scope()
	// An empty page of a conversation that is not in scope must be 404.
	if _, err := store.FindConversation(ctx, s.DB, scope, id); err != nil {
		s.apiError(c, err)
		return
	}
	items, err := store.ListMessages(ctx, s.DB, scope, id, after, limit+1)
	if err != nil {
		s.apiError(c, err)
		return
	}
	writeList(c, items, limit, func(m store.Message) int64 { return m.ID })
}

// Body limits per channel (Twilio's: SMS 1,600 characters, WhatsApp 4,096).
var maxBody = map[store.ChannelKind]int{store.ChannelSMS: 1600, store.ChannelWhatsApp: 4096}

// SendMessage handles POST /api/v1/conversations/:id/messages: an operator's
// message, written as pending together with its conversa.send job in one
// transaction, so it is sent exactly once or not at all.
func (s *Server) SendMessage(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.apiError(c, err)
		return
	}
	var req struct {
		Body string `json:"body"`
	}
	if err := decodeJSON(c, &req); err != nil {
		s.apiError(c, err)
		return
	}
	ctx, scope := c.Request.Context(), who(c).scope()
	tx, err := s.dbFor(c).Begin(ctx)
	if err != nil {
		s.apiError(c, err)
		return
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	msg, err := SendHumanMessage(ctx, tx, s.River, scope, s.Now(), HumanMessage{ConversationID: id, Body: req.Body, Via: "api"})
	if err != nil {
		s.apiError(c, err)
		return
	}
	if err := tx.Commit(ctx); err != nil {
		s.apiError(c, fmt.Errorf("commit: %w", err))
		return
	}
	s.Logger.Info("human message queued", "tenant_id", msg.TenantID, "conversation_id", msg.ConversationID, "message_id", msg.ID)
	c.JSON(http.StatusAccepted, msg)
}

// Handoff handles POST /api/v1/conversations/:id/handoff {"to":"human"|"bot"}:
// pause the AI (a human answers) or resume it.
func (s *Server) Handoff(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.apiError(c, err)
		return
	}
	var req struct {
		To store.ConversationStatus `json:"to"`
	}
	if err := decodeJSON(c, &req); err != nil {
		s.apiError(c, err)
		return
	}
	conv, err := Handoff(c.Request.Context(), s.DB, who(c).scope(), id, req.To)
	if err != nil {
		s.apiError(c, err)
		return
	}
	s.Logger.Info("conversation handed off", "tenant_id", conv.TenantID, "conversation_id", conv.ID, "to", req.To)
	c.JSON(http.StatusOK, conv)
}

// FindMessages handles GET /api/v1/messages?twilio_sid=SM...: the message
// with that Twilio SID, as a list of zero or one.
func (s *Server) FindMessages(c *gin.Context) {
	sid, err := textField("twilio_sid", c.Query("twilio_sid"), true, 128)
	if err != nil {
		s.apiError(c, err)
		return
	}
	items := []store.Message{}
	m, err := store.MessageByTwilioSID(c.Request.Context(), s.DB, who(c).scope(), sid)
	switch {
	case err == nil:
		items = append(items, m)
	case !errors.Is(err, store.ErrNotFound):
		s.apiError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"items": items, "next_cursor": nil})
}

// Trace handles GET /api/v1/messages/:id/trace: the message and one
// timeline (webhook, turn, agent, send attempts, status callbacks) that
// also takes in its reply or the message it answers, each event naming its
// message, plus the River jobs that worked on them, with state and errors.
func (s *Server) Trace(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.apiError(c, err)
		return
	}
	t, err := LoadTrace(c.Request.Context(), s.DB, who(c).scope(), id)
	if err != nil {
		s.apiError(c, err)
		return
	}
	c.JSON(http.StatusOK, t)
}
