package console

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/api"
)

// Sign-in and sign-out.

func (h *Handler) loginPage(c *gin.Context) {
	h.renderLogin(c, http.StatusOK, "")
}

// renderLogin shows the sign-in form with a fresh double-submit token.
func (h *Handler) renderLogin(c *gin.Context, status int, msg string) {
	tok := randomToken()
	h.setCookie(c, loginCookie, tok, 3600)
	h.page(c, status, "login", pageData{Title: "Sign in", CSRF: tok, Error: msg})
}

func (h *Handler) login(c *gin.Context) {
	want, _ := c.Cookie(loginCookie)
	if !sameToken(c.PostForm("csrf_token"), want) {
		h.renderLogin(c, http.StatusForbidden, "The sign-in form expired. Please try again.")
		return
	}
	s, err := h.signIn(c, c.PostForm("api_key"))
	if errors.Is(err, errBadKey) {
		h.renderLogin(c, http.StatusUnauthorized, "That API key is not valid. Use a tenant API key (from `conversa tenant create`) or the admin token.")
		return
	}
	if err != nil {
		h.fail(c, err)
		return
	}
	h.setCookie(c, loginCookie, "", -1)
	if s.Admin {
		h.redirect(c, Prefix+"/tenants")
		return
	}
	h.redirect(c, Prefix+"/conversations")
}

func (h *Handler) logout(c *gin.Context) {
	if err := store.DeleteConsoleSession(c.Request.Context(), h.DB, current(c).tokenHash, h.Now()); err != nil {
		h.fail(c, err)
		return
	}
	h.setCookie(c, sessionCookie, "", -1)
	h.redirect(c, Prefix+"/login")
}

// The operator's tenant picker.

func (h *Handler) tenantsPage(c *gin.Context) {
	if !current(c).Admin {
		h.redirect(c, Prefix+"/conversations")
		return
	}
	list, err := store.ListTenants(c.Request.Context(), h.DB)
	if err != nil {
		h.fail(c, err)
		return
	}
	h.page(c, http.StatusOK, "tenants", pageData{Title: "Pick a tenant", Data: list})
}

func (h *Handler) pickTenant(c *gin.Context) {
	s := current(c)
	if !s.Admin {
		h.fail(c, store.ErrNotFound)
		return
	}
	if err := store.SetConsoleSessionTenant(c.Request.Context(), h.DB, s.tokenHash, c.PostForm("tenant_id")); err != nil {
		h.fail(c, err)
		return
	}
	h.redirect(c, Prefix+"/conversations")
}

// Conversations.

// listFilter is the conversations list's query: a status and a search.
type listFilter struct {
	Status string
	Search string
}

func (f listFilter) Query() string {
	v := []string{}
	if f.Status != "" {
		v = append(v, "status="+f.Status)
	}
	if f.Search != "" {
		v = append(v, "q="+queryEscape(f.Search))
	}
	return strings.Join(v, "&")
}

func (h *Handler) conversationsPage(c *gin.Context) {
	f := listFilter{Status: c.Query("status"), Search: strings.TrimSpace(c.Query("q"))}
	switch f.Status {
	case "", "bot", "human", "closed":
	default:
		h.fail(c, api.Invalid("status must be bot, human or closed"))
		return
	}
	if len(f.Search) > 64 {
		h.fail(c, api.Invalid("search is longer than 64 characters"))
		return
	}
	list, err := store.ListConversationSummaries(c.Request.Context(), h.DB, current(c).scope(), f.Status, f.Search, 100)
	if err != nil {
		h.fail(c, err)
		return
	}
	h.page(c, http.StatusOK, "conversations", pageData{
		Title: "Conversations", Nav: "conversations", Fragment: c.GetHeader("HX-Target") == "conversation-rows",
		Data: struct {
			Filter listFilter
			Items  []store.ConversationSummary
		}{f, list},
	})
}

// conversationView is what the conversation page shows.
type conversationView struct {
	Conv     store.ConversationView
	Messages []store.Message
	// Blocked is why a person cannot send now ("" when they can).
	Blocked string
	FormKey string
	Body    string
}

// pathID parses a numeric id; anything else names no row (404).
func pathID(c *gin.Context) (int64, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, store.ErrNotFound
	}
	return id, nil
}

// loadConversation reads the conversation page's data in the session's scope.
func (h *Handler) loadConversation(c *gin.Context, id int64) (conversationView, error) {
	ctx, scope := c.Request.Context(), current(c).scope()
	conv, err := store.FindConversation(ctx, h.DB, scope, id)
	if err != nil {
		return conversationView{}, err
	}
	msgs, err := store.RecentMessages(ctx, h.DB, scope, id, 200)
	if err != nil {
		return conversationView{}, err
	}
	v := conversationView{Conv: conv, Messages: msgs, FormKey: randomToken()}
	if err := api.SendBlocked(conv, h.Now()); err != nil {
		v.Blocked = shownError(err)
	}
	return v, nil
}

func (h *Handler) conversationPage(c *gin.Context) {
	id, err := pathID(c)
	if err != nil {
		h.fail(c, err)
		return
	}
	v, err := h.loadConversation(c, id)
	if err != nil {
		h.fail(c, err)
		return
	}
	h.renderConversation(c, http.StatusOK, v, "")
}

func (h *Handler) renderConversation(c *gin.Context, status int, v conversationView, msg string) {
	h.page(c, status, "conversation", pageData{
		Title: "Conversation with " + contactLabel(v.Conv), Nav: "conversations", Error: msg,
		Fragment: c.GetHeader("HX-Target") == "messages", Data: v,
	})
}

// handoff takes a conversation over ("human") or hands it back ("bot"),
// through the same function as POST /api/v1/conversations/:id/handoff.
func (h *Handler) handoff(to store.ConversationStatus) gin.HandlerFunc {
	return func(c *gin.Context) {
		id, err := pathID(c)
		if err != nil {
			h.fail(c, err)
			return
		}
		conv, err := api.Handoff(c.Request.Context(), h.DB, current(c).scope(), id, to)
		if err != nil {
			h.fail(c, err)
			return
		}
		h.Logger.Info("conversation handed off", "tenant_id", conv.TenantID, "conversation_id", conv.ID, "to", to, "via", "console")
		h.redirect(c, fmt.Sprintf("%s/conversations/%d", Prefix, id))
	}
}

// formKeyRE is what randomToken makes.
var formKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)

// reply sends a person's message through the operator API's send path. The
// form's key makes a repeat of the same form (a double click, a resubmit)
// find the message the first one created instead of sending again.
func (h *Handler) reply(c *gin.Context) {
	id, err := pathID(c)
	if err != nil {
		h.fail(c, err)
		return
	}
	body, key := c.PostForm("body"), c.PostForm("form_key")
	if !formKeyRE.MatchString(key) {
		h.fail(c, api.Invalid("this form is missing its key; reload the page and send again"))
		return
	}
	ctx, s := c.Request.Context(), current(c)
	tx, err := h.DB.Begin(ctx)
	if err != nil {
		h.fail(c, err)
		return
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	prev, err := store.ClaimConsoleSend(ctx, tx, s.tenantID(), key)
	if err != nil {
		h.fail(c, err)
		return
	}
	if prev == 0 {
		msg, err := api.SendHumanMessage(ctx, tx, h.River, s.scope(), h.Now(), api.HumanMessage{ConversationID: id, Body: body, Via: "console"})
		var fe *api.FieldError
		if errors.As(err, &fe) || errors.Is(err, store.ErrConflict) {
			_ = tx.Rollback(ctx)
			v, lerr := h.loadConversation(c, id)
			if lerr != nil {
				h.fail(c, lerr)
				return
			}
			v.Body, v.FormKey = body, key
			status := http.StatusBadRequest
			if fe == nil {
				status = http.StatusConflict
			}
			h.renderConversation(c, status, v, shownError(err))
			return
		}
		if err != nil {
			h.fail(c, err)
			return
		}
		if err := store.RecordConsoleSend(ctx, tx, s.tenantID(), key, msg.ID); err != nil {
			h.fail(c, err)
			return
		}
		if err := tx.Commit(ctx); err != nil {
			h.fail(c, fmt.Errorf("commit: %w", err))
			return
		}
		prev = msg.ID
		h.Logger.Info("human message queued", "tenant_id", s.tenantID(), "conversation_id", id, "message_id", msg.ID, "via", "console")
	}
	h.redirect(c, fmt.Sprintf("%s/conversations/%d#message-%d", Prefix, id, prev))
}

// tracePage shows a message's trace: the same timeline as
// GET /api/v1/messages/:id/trace, in words.
func (h *Handler) tracePage(c *gin.Context) {
	id, err := pathID(c)
	if err != nil {
		h.fail(c, err)
		return
	}
	t, err := api.LoadTrace(c.Request.Context(), h.DB, current(c).scope(), id)
	if err != nil {
		h.fail(c, err)
		return
	}
	h.page(c, http.StatusOK, "trace", pageData{
		Title: fmt.Sprintf("Trace of message %d", id), Nav: "conversations",
		Fragment: c.GetHeader("HX-Target") == "trace", Data: t,
	})
}

// Agents.

func (h *Handler) agentsPage(c *gin.Context) {
	list, err := store.ListAgents(c.Request.Context(), h.DB, current(c).tenantID())
	if err != nil {
		h.fail(c, err)
		return
	}
	h.page(c, http.StatusOK, "agents", pageData{Title: "Agents", Nav: "agents", Data: list})
}

// agentForm is the agent form's fields as text, and the field an error is about.
type agentForm struct {
	Name, SystemPrompt, Model, Keywords, Tools, FAQ, FallbackMessage string
	ErrorField                                                       string
	Saved                                                            bool
	// Vision: the agent sees images as image parts.
	Vision bool
}

func formOf(a store.Agent) agentForm {
	var faq []string
	for _, f := range a.FAQ {
		faq = append(faq, strings.Join(f.Keywords, ", ")+" | "+f.Answer)
	}
	return agentForm{
		Name: a.Name, SystemPrompt: a.SystemPrompt, Model: a.Model,
		Keywords: strings.Join(a.Keywords, ", "), Tools: strings.Join(a.Tools, ", "), FAQ: strings.Join(faq, "\n"),
		FallbackMessage: a.FallbackMessage, Vision: a.Vision,
	}
}

func (h *Handler) agentPage(c *gin.Context) {
	list, err := store.ListAgents(c.Request.Context(), h.DB, current(c).tenantID())
	if err != nil {
		h.fail(c, err)
		return
	}
	for _, a := range list {
		if a.Name == c.Param("name") {
			f := formOf(a)
			f.Saved = c.Query("saved") == "1"
			h.page(c, http.StatusOK, "agent", pageData{Title: "Agent " + a.Name, Nav: "agents", Data: f})
			return
		}
	}
	h.fail(c, store.ErrNotFound)
}

// saveAgent replaces an existing agent's configuration after the same
// validation as PUT /api/v1/tenants/:id/agents/:name; a bad field is shown
// next to it and nothing is written.
func (h *Handler) saveAgent(c *gin.Context) {
	ctx, tenantID := c.Request.Context(), current(c).tenantID()
	name := c.Param("name")
	list, err := store.ListAgents(ctx, h.DB, tenantID)
	if err != nil {
		h.fail(c, err)
		return
	}
	if !hasAgent(list, name) {
		h.fail(c, store.ErrNotFound)
		return
	}
	f := agentForm{
		Name: name, SystemPrompt: c.PostForm("system_prompt"), Model: c.PostForm("model"),
		Keywords: c.PostForm("keywords"), Tools: c.PostForm("tools"), FAQ: c.PostForm("faq"),
		FallbackMessage: c.PostForm("fallback_message"), Vision: c.PostForm("vision") == "on",
	}
	in := api.AgentInput{SystemPrompt: f.SystemPrompt, Model: f.Model, Keywords: splitList(f.Keywords), Tools: splitList(f.Tools),
		FallbackMessage: f.FallbackMessage, Vision: f.Vision}
	faq, err := parseFAQ(f.FAQ)
	var a store.Agent
	if err == nil {
		in.FAQ = faq
		a, err = api.ValidateAgent(name, in, false)
		// The form does not edit HTTP tools: the agent keeps its own.
		a.HTTPTools = agentTools(list, name)
	}
	var fe *api.FieldError
	if errors.As(err, &fe) {
		f.ErrorField = fe.Field
		h.page(c, http.StatusBadRequest, "agent", pageData{Title: "Agent " + name, Nav: "agents", Error: shownError(err), Data: f})
		return
	}
	if err != nil {
		h.fail(c, err)
		return
	}
	if _, _, err := store.PutAgent(ctx, h.DB, tenantID, a, nil); err != nil {
		h.fail(c, err)
		return
	}
	h.redirect(c, Prefix+"/agents/"+name+"?saved=1")
}

// agentTools are the HTTP tools of the agent named name in list.
func agentTools(list []store.Agent, name string) []store.HTTPTool {
	for _, a := range list {
		if a.Name == name {
			return a.HTTPTools
		}
	}
	return nil
}

func hasAgent(list []store.Agent, name string) bool {
	for _, a := range list {
		if a.Name == name {
			return true
		}
	}
	return false
}

// splitList reads "a, b, c" (or one a line) as a list, dropping blanks.
func splitList(s string) []string {
	out := []string{}
	for _, p := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' }) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseFAQ reads the FAQ box: one answer a line, "keyword, keyword | answer".
func parseFAQ(s string) ([]store.FAQEntry, error) {
	out := []store.FAQEntry{}
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		kw, answer, ok := strings.Cut(line, "|")
		if !ok {
			return nil, &api.FieldError{Field: "faq", Err: api.Invalid(fmt.Sprintf("FAQ line %d must read \"keyword, keyword | answer\"", i+1))}
		}
		out = append(out, store.FAQEntry{Keywords: splitList(kw), Answer: answer})
	}
	return out, nil
}

// Usage.

// usageView is the usage page's data.
type usageView struct {
	Balance int64
	Days    []store.DayCount
	Chart   chart
	Failed  []store.Message
}

func (h *Handler) usagePage(c *gin.Context) {
	ctx, tenantID := c.Request.Context(), current(c).tenantID()
	t, err := store.GetTenant(ctx, h.DB, tenantID)
	if err != nil {
		h.fail(c, err)
		return
	}
	days, err := store.RepliesPerDay(ctx, h.DB, tenantID, h.Now(), 14)
	if err != nil {
		h.fail(c, err)
		return
	}
	failed, err := store.FailedMessages(ctx, h.DB, tenantID, 50)
	if err != nil {
		h.fail(c, err)
		return
	}
	h.page(c, http.StatusOK, "usage", pageData{Title: "Usage", Nav: "usage",
		Data: usageView{Balance: t.Credits, Days: days, Chart: barChart(days), Failed: failed}})
}
