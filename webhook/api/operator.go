package api

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/conversa/conversa/internal/egress"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/edge"
)

// The operator's actions, shared by the JSON API (/api/v1) and the console
// (/console/): a person's message, an agent's configuration and a message's
// Trace are decided here once, whichever edge a request comes through.

// ErrInvalid marks bad input to an operator action; its store.Refusal says
// what is wrong and is safe to show (store.RefusalReason).
var ErrInvalid = errInvalid

// Invalid is bad input to an operator action: ErrInvalid with reason.
func Invalid(reason string) error { return store.Refuse(errInvalid, reason) }

// FieldError is an invalid input that names the field it is about, so a
// form can show the message next to it.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, err error) error {
	return &FieldError{Field: field, Err: err}
}

// SendBlocked says why a person cannot send a message in conv now, or nil
// when they can: the conversation is closed, the contact sent STOP, or it is
// WhatsApp and the contact's last message is 24 h old or more (free text
// cannot be delivered then). The error wraps store.ErrConflict.
func SendBlocked(conv store.ConversationView, now time.Time) error {
	switch {
	case conv.Status == store.ConversationClosed:
		return store.Refuse(store.ErrConflict, "the conversation is closed")
	case conv.ContactOptOut:
		return store.Refuse(store.ErrConflict, "the contact has opted out (STOP); nothing is sent until they write START")
	case !store.FreeTextAllowed(conv.ChannelKind, conv.LastInboundAt, now):
		return store.Refuse(store.ErrConflict, "outside WhatsApp's 24-hour window: the contact has not written for 24 hours, so free text cannot be sent")
	}
	return nil
}

// HumanMessage is a person's message to a conversation.
type HumanMessage struct {
	ConversationID int64
	Body           string
	// Via names the edge it came through ("api", "console") for the trace.
	Via string
}

// SendHumanMessage writes a person's message as pending together with its
// conversa.send job in tx, so it is sent exactly once or not at all when the
// caller commits. Bad input is ErrInvalid (a FieldError on "body"); a
// conversation that takes no message now is store.ErrConflict (see
// SendBlocked); one out of scope is store.ErrNotFound.
func SendHumanMessage(ctx context.Context, tx pgx.Tx, ins edge.Inserter, scope store.Scope, now time.Time, m HumanMessage) (store.Message, error) {
	conv, err := store.FindConversation(ctx, tx, scope, m.ConversationID)
	if err != nil {
		return store.Message{}, err
	}
	body, err := textField("body", m.Body, true, maxBody[conv.ChannelKind])
	if err != nil {
		return store.Message{}, fieldErr("body", err)
	}
	if err := SendBlocked(conv, now); err != nil {
		return store.Message{}, err
	}
	msgID, err := store.InsertOutbound(ctx, tx, store.Outbound{
		TenantID:       conv.TenantID,
		ConversationID: conv.ID,
		Author:         store.AuthorHuman,
		Body:           body,
		EventKind:      "message.created",
		Event:          map[string]any{"author": store.AuthorHuman, "via": m.Via},
	})
	if err != nil {
		return store.Message{}, err
	}
	if _, err := ins.InsertTx(ctx, tx, jobargs.SendArgs{TenantID: conv.TenantID, MessageID: msgID}, nil); err != nil {
		return store.Message{}, fmt.Errorf("insert send job: %w", err)
	}
	return store.FindMessage(ctx, tx, scope, msgID)
}

// Handoff hands a conversation in scope to a person (to "human") or back to
// the bot ("bot"). Anything else is ErrInvalid; a closed conversation is
// store.ErrConflict.
func Handoff(ctx context.Context, db store.DBTX, scope store.Scope, id int64, to store.ConversationStatus) (store.Conversation, error) {
	if to != store.ConversationHuman && to != store.ConversationBot {
		return store.Conversation{}, fieldErr("to", invalid(`to must be "human" or "bot"`))
	}
	return store.Handoff(ctx, db, scope, id, to)
}

// AgentInput is an agent's configuration as an operator submits it.
type AgentInput struct {
	SystemPrompt string           `json:"system_prompt"`
	Model        string           `json:"model"`
	Tools        []string         `json:"tools"`
	Keywords     []string         `json:"keywords"`
	FAQ          []store.FAQEntry `json:"faq"`
	IsDefault    *bool            `json:"is_default"`
	// FallbackMessage is what the customer gets when the bot gives up
	// on an unavailable LLM (see README, "A real LLM").
	FallbackMessage string `json:"fallback_message"`
	// Vision passes images to the model as image parts.
	Vision bool `json:"vision"`
	// HTTPTools are the business's endpoints the agent may call (docs/tools.md).
	HTTPTools []HTTPToolInput `json:"http_tools"`
}

// HTTPToolInput is one HTTP tool as an operator submits it.
type HTTPToolInput struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
	URL         string          `json:"url"`
	Keywords    []string        `json:"keywords"`
}

// MaxHTTPTools is the most HTTP tools an agent may have.
const MaxHTTPTools = 16

// ValidateAgent checks and cleans an agent's configuration. Each problem is
// a FieldError naming the field ("system_prompt", "faq[2].answer", ...).
// allowPrivate admits HTTP tool URLs on loopback and private addresses
// (TOOLS_ALLOW_PRIVATE).
func ValidateAgent(name string, in AgentInput, allowPrivate bool) (store.Agent, error) {
	if !agentNameRE.MatchString(name) {
		return store.Agent{}, fieldErr("name", invalid("agent name must be 1-63 of a-z, 0-9, _ and -, starting with a letter or digit"))
	}
	a := store.Agent{Name: name, Tools: in.Tools, Vision: in.Vision}
	var err error
	if a.SystemPrompt, err = textField("system_prompt", in.SystemPrompt, false, 20000); err != nil {
		return store.Agent{}, fieldErr("system_prompt", err)
	}
	if a.Model, err = textField("model", in.Model, false, 200); err != nil {
		return store.Agent{}, fieldErr("model", err)
	}
	if a.FallbackMessage, err = textField("fallback_message", in.FallbackMessage, false, 1600); err != nil {
		return store.Agent{}, fieldErr("fallback_message", err)
	}
	if len(in.Tools) > 20 {
		return store.Agent{}, fieldErr("tools", invalid("tools lists at most 20 tools"))
	}
	for i, t := range in.Tools {
		if !toolNameRE.MatchString(t) {
			return store.Agent{}, fieldErr("tools", invalid("tools[%d] is not a tool name", i))
		}
	}
	if a.Keywords, err = keywords("keywords", in.Keywords); err != nil {
		return store.Agent{}, fieldErr("keywords", err)
	}
	if len(in.FAQ) > 200 {
		return store.Agent{}, fieldErr("faq", invalid("faq lists at most 200 answers"))
	}
	for i, f := range in.FAQ {
		var e store.FAQEntry
		if e.Keywords, err = keywords(fmt.Sprintf("faq[%d].keywords", i), f.Keywords); err != nil {
			return store.Agent{}, fieldErr("faq", err)
		}
		if len(e.Keywords) == 0 {
			return store.Agent{}, fieldErr("faq", invalid("faq[%d].keywords must not be empty", i))
		}
		if e.Answer, err = textField(fmt.Sprintf("faq[%d].answer", i), f.Answer, true, 4000); err != nil {
			return store.Agent{}, fieldErr("faq", err)
		}
		a.FAQ = append(a.FAQ, e)
	}
	if a.HTTPTools, err = validateHTTPTools(in.HTTPTools, in.Tools, allowPrivate); err != nil {
		return store.Agent{}, err
	}
	return a, nil
}

// validateHTTPTools checks an agent's HTTP tools; a problem is a FieldError
// on "http_tools" whose message names the tool's field.
func validateHTTPTools(in []HTTPToolInput, builtin []string, allowPrivate bool) ([]store.HTTPTool, error) {
	bad := func(format string, args ...any) error { return fieldErr("http_tools", invalid(format, args...)) }
	if len(in) > MaxHTTPTools {
		return nil, bad("http_tools lists at most %d tools", MaxHTTPTools)
	}
	out := make([]store.HTTPTool, 0, len(in))
	seen := map[string]bool{"handoff_to_human": true}
	for _, b := range builtin {
		seen[b] = true
	}
	for i, t := range in {
		if !toolNameRE.MatchString(t.Name) {
			return nil, bad("http_tools[%d].name must be 1-64 of a-z, 0-9 and _, starting with a letter", i)
		}
		if seen[t.Name] {
			return nil, bad("http_tools[%d].name %q is a duplicate tool name", i, t.Name)
		}
		seen[t.Name] = true
		desc, err := textField(fmt.Sprintf("http_tools[%d].description", i), t.Description, false, 1000)
		if err != nil {
			return nil, fieldErr("http_tools", err)
		}
		params := map[string]any{"type": "object", "properties": map[string]any{}}
		if len(t.Parameters) > 0 && string(t.Parameters) != "null" {
			params = nil
			if json.Unmarshal(t.Parameters, &params) != nil || params == nil {
				return nil, bad("http_tools[%d].parameters must be a JSON Schema object", i)
			}
			if typ, ok := params["type"]; ok && typ != "object" {
				return nil, bad(`http_tools[%d].parameters must be a JSON Schema of "type": "object"`, i)
			}
			params["type"] = "object"
		}
		url := strings.TrimSpace(t.URL)
		if url == "" {
			return nil, bad("http_tools[%d].url is required", i)
		}
		if err := egress.CheckURL(url, allowPrivate); err != nil {
			return nil, bad("http_tools[%d].url: %s", i, strings.TrimPrefix(err.Error(), egress.ErrRefused.Error()+": "))
		}
		kw, err := keywords(fmt.Sprintf("http_tools[%d].keywords", i), t.Keywords)
		if err != nil {
			return nil, fieldErr("http_tools", err)
		}
		out = append(out, store.HTTPTool{Name: t.Name, Description: desc, Parameters: params, URL: url, Keywords: kw})
	}
	return out, nil
}

// Trace is a message's story as GET /api/v1/messages/:id/trace shows it.
type Trace struct {
	Message           store.Message      `json:"message"`
	RelatedMessageIDs []int64            `json:"related_message_ids"`
	Events            []store.TraceEvent `json:"events"`
	Jobs              []store.MessageJob `json:"jobs"`
}

// LoadTrace returns the message and one timeline (webhook, turn, agent, send
// attempts, status callbacks) that also takes in its reply or the message it
// answers, each event naming its message, plus the River jobs that worked on
// them, with state and errors.
func LoadTrace(ctx context.Context, db store.DBTX, scope store.Scope, id int64) (Trace, error) {
	msg, err := store.FindMessage(ctx, db, scope, id)
	if err != nil {
		return Trace{}, err
	}
	related, err := store.RelatedMessages(ctx, db, scope, msg)
	if err != nil {
		return Trace{}, err
	}
	ids := append([]int64{id}, related...)
	events, err := store.MessageEvents(ctx, db, scope, ids)
	if err != nil {
		return Trace{}, err
	}
	jobList, err := store.MessageJobs(ctx, db, scope, ids)
	if err != nil {
		return Trace{}, err
	}
	t := Trace{Message: msg, RelatedMessageIDs: related, Events: events, Jobs: jobList}
	if t.Events == nil {
		t.Events = []store.TraceEvent{}
	}
	if t.Jobs == nil {
		t.Jobs = []store.MessageJob{}
	}
	if t.RelatedMessageIDs == nil {
		t.RelatedMessageIDs = []int64{}
	}
	return t, nil
}
