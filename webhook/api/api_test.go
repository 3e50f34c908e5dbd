package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

// call is do that requires status and decodes the JSON answer.
func call[T any](t *testing.T, o edgetest.Ops, method, path, auth string, body any, status int) T {
	t.Helper()
	rec := o.Do(t, method, path, auth, body)
	require.Equal(t, status, rec.Code, "%s %s: %s", method, path, rec.Body.String())
	var v T
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &v), rec.Body.String())
	return v
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type conversation struct {
	ID             int64  `json:"id"`
	TenantID       string `json:"tenant_id"`
	Status         string `json:"status"`
	ContactAddress string `json:"contact_address"`
	ChannelAddress string `json:"channel_address"`
}

type message struct {
	ID             int64   `json:"id"`
	ConversationID int64   `json:"conversation_id"`
	Direction      string  `json:"direction"`
	Author         string  `json:"author"`
	Body           string  `json:"body"`
	Status         string  `json:"status"`
	ErrorCode      *string `json:"error_code"`
	TwilioSID      *string `json:"twilio_sid"`
	CreatedAt      string  `json:"created_at"`
}

type listOf[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

type trace struct {
	Message message `json:"message"`
	Related []int64 `json:"related_message_ids"`
	Events  []struct {
		MessageID int64          `json:"message_id"`
		At        string         `json:"at"`
		Kind      string         `json:"kind"`
		Detail    map[string]any `json:"detail"`
	} `json:"events"`
	Jobs []struct {
		Kind  string `json:"kind"`
		State string `json:"state"`
	} `json:"jobs"`
}

// world is one tenant with one conversation holding one inbound message.
type world struct {
	ten  testdb.Tenant
	conv conversation
	msg  message
	sid  string
}

// newWorld makes a tenant and posts a signed inbound message to it.
func newWorld(t *testing.T, o edgetest.Ops) world {
	t.Helper()
	ten := testdb.NewTenant(t, testdb.Pool(t), 5)
	form := edgetest.InboundForm(ten, "whatsapp:"+testdb.PhoneNumber(), "hello")
	require.Equal(t, http.StatusOK, edgetest.Post(t, o.H, "/twilio/inbound", ten.AuthToken, form).Code)
	convs := call[listOf[conversation]](t, o, "GET", "/api/v1/conversations", edgetest.Bearer(ten.APIKey), nil, 200)
	require.Len(t, convs.Items, 1)
	msgs := call[listOf[message]](t, o, "GET", "/api/v1/conversations/"+id(convs.Items[0].ID)+"/messages", edgetest.Bearer(ten.APIKey), nil, 200)
	require.Len(t, msgs.Items, 1)
	return world{ten: ten, conv: convs.Items[0], msg: msgs.Items[0], sid: form.Get("MessageSid")}
}

func id(n int64) string { return strconv.FormatInt(n, 10) }

func TestAPITenantLifecycle(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	admin := edgetest.Bearer(o.Admin)

	created := call[map[string]any](t, o, "POST", "/api/v1/tenants", admin, map[string]any{"name": "Acme"}, 201)
	tenantID, _ := created["id"].(string)
	key, _ := created["api_key"].(string)
	secret, _ := created["signing_secret"].(string)
	require.NotEmpty(t, tenantID)
	require.NotEmpty(t, key)
	require.NotEmpty(t, secret, "the signing secret is shown once, at creation")
	require.Equal(t, "Acme", created["name"])
	require.EqualValues(t, 0, created["credits"], "new tenants start with no credits")

	// The new key works at once and sees an empty tenant.
	convs := call[listOf[conversation]](t, o, "GET", "/api/v1/conversations", edgetest.Bearer(key), nil, 200)
	require.Empty(t, convs.Items)
	require.Nil(t, convs.NextCursor)

	// The tenant adds its own account; the answer never echoes the token.
	sms, wa := testdb.PhoneNumber(), "whatsapp:"+testdb.PhoneNumber()
	rec := o.Do(t, "POST", "/api/v1/tenants/"+tenantID+"/accounts", edgetest.Bearer(key),
		map[string]any{"account_sid": "AC" + testdb.Unique(), "auth_token": "secrettoken123", "numbers": []string{sms, wa}})
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	require.NotContains(t, rec.Body.String(), "secrettoken123")
	var acc store.Account
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &acc))
	require.ElementsMatch(t, []string{sms, wa}, acc.Numbers)

	// A number another tenant owns is a conflict, and nothing is written.
	other := testdb.NewTenant(t, testdb.Pool(t), 0)
	e := call[apiError](t, o, "POST", "/api/v1/tenants/"+tenantID+"/accounts", admin,
		map[string]any{"account_sid": "AC" + testdb.Unique(), "auth_token": "tok", "numbers": []string{other.SMS}}, 409)
	require.Equal(t, "conflict", e.Error.Code)

	// Credits are the operator's to give.
	bal := call[map[string]any](t, o, "POST", "/api/v1/tenants/"+tenantID+"/credits", admin, map[string]any{"amount": 25}, 200)
	require.EqualValues(t, 25, bal["balance"])
	bal = call[map[string]any](t, o, "POST", "/api/v1/tenants/"+tenantID+"/credits", admin, map[string]any{"amount": 5}, 200)
	require.EqualValues(t, 30, bal["balance"])

	// Agents: created (201), then replaced (200); one default at a time.
	agent := map[string]any{
		"system_prompt": "You sell shoes.", "model": "gpt-4o-mini", "tools": []string{"handoff_to_human"},
		"keywords": []string{"shoe", "size"}, "faq": []map[string]any{{"keywords": []string{"return"}, "answer": "30 days."}},
		"is_default": true,
	}
	got := call[store.Agent](t, o, "PUT", "/api/v1/tenants/"+tenantID+"/agents/sales", edgetest.Bearer(key), agent, 201)
	require.Equal(t, "sales", got.Name)
	require.True(t, got.IsDefault)
	require.Equal(t, []store.FAQEntry{{Keywords: []string{"return"}, Answer: "30 days."}}, got.FAQ)
	require.Empty(t, got.FallbackMessage, "no fallback_message: the built-in notice")
	agent["model"] = "gpt-4o"
	agent["fallback_message"] = "  We will call you back shortly. "
	delete(agent, "is_default")
	got = call[store.Agent](t, o, "PUT", "/api/v1/tenants/"+tenantID+"/agents/sales", admin, agent, 200)
	require.Equal(t, "gpt-4o", got.Model)
	require.Equal(t, "We will call you back shortly.", got.FallbackMessage)
	require.True(t, got.IsDefault, "an omitted is_default keeps the flag")

	var defaults []string
	rows, err := testdb.Pool(t).Query(context.Background(), `SELECT name FROM agents WHERE tenant_id = $1 AND is_default`, tenantID)
	require.NoError(t, err)
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		defaults = append(defaults, n)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"sales"}, defaults, "the new default replaced the built-in one")
}

func TestAPIConversationsMessagesAndTrace(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	w := newWorld(t, o)
	key := edgetest.Bearer(w.ten.APIKey)

	require.EqualValues(t, "inbound", w.msg.Direction)
	require.Equal(t, "hello", w.msg.Body)
	require.EqualValues(t, "received", w.msg.Status)
	require.Equal(t, w.sid, *w.msg.TwilioSID)
	require.Equal(t, w.conv.ID, w.msg.ConversationID)
	require.NotEmpty(t, w.msg.CreatedAt)
	require.Equal(t, w.ten.WhatsApp, w.conv.ChannelAddress)

	// Found by its Twilio SID.
	found := call[listOf[message]](t, o, "GET", "/api/v1/messages?twilio_sid="+w.sid, key, nil, 200)
	require.Len(t, found.Items, 1)
	require.Equal(t, w.msg.ID, found.Items[0].ID)
	none := call[listOf[message]](t, o, "GET", "/api/v1/messages?twilio_sid=SMnothing", key, nil, 200)
	require.Empty(t, none.Items)

	// The trace starts at the webhook and shows the turn job waiting.
	tr := call[trace](t, o, "GET", "/api/v1/messages/"+id(w.msg.ID)+"/trace", key, nil, 200)
	require.Equal(t, w.msg.ID, tr.Message.ID)
	require.NotEmpty(t, tr.Events)
	require.Equal(t, "webhook.received", tr.Events[0].Kind)
	require.NotEmpty(t, tr.Events[0].At)
	require.Equal(t, "whatsapp", tr.Events[0].Detail["channel"])
	require.Len(t, tr.Jobs, 1)
	require.Equal(t, "conversa.reply", tr.Jobs[0].Kind)

	// Handoff to a human, then back.
	conv := call[conversation](t, o, "POST", "/api/v1/conversations/"+id(w.conv.ID)+"/handoff", key, map[string]string{"to": "human"}, 200)
	require.EqualValues(t, "human", conv.Status)
	humans := call[listOf[conversation]](t, o, "GET", "/api/v1/conversations?status=human", key, nil, 200)
	require.Len(t, humans.Items, 1)
	bots := call[listOf[conversation]](t, o, "GET", "/api/v1/conversations?status=bot", key, nil, 200)
	require.Empty(t, bots.Items)

	// A human sends: the outbound row and its send job commit together.
	sent := call[message](t, o, "POST", "/api/v1/conversations/"+id(w.conv.ID)+"/messages", key, map[string]string{"body": "A person here."}, 202)
	require.EqualValues(t, "outbound", sent.Direction)
	require.EqualValues(t, "human", sent.Author)
	require.EqualValues(t, "pending", sent.Status)
	var jobs int
	require.NoError(t, testdb.Pool(t).QueryRow(context.Background(),
		`SELECT count(*) FROM river_job WHERE kind = 'conversa.send' AND (args->>'message_id')::bigint = $1 AND args->>'tenant_id' = $2`,
		sent.ID, w.ten.ID).Scan(&jobs))
	require.Equal(t, 1, jobs)
	tr = call[trace](t, o, "GET", "/api/v1/messages/"+id(sent.ID)+"/trace", key, nil, 200)
	require.Equal(t, "message.created", tr.Events[0].Kind)
	require.Len(t, tr.Jobs, 1)
	require.Equal(t, "conversa.send", tr.Jobs[0].Kind)

	msgs := call[listOf[message]](t, o, "GET", "/api/v1/conversations/"+id(w.conv.ID)+"/messages", key, nil, 200)
	require.Len(t, msgs.Items, 2)
	require.Equal(t, []int64{w.msg.ID, sent.ID}, []int64{msgs.Items[0].ID, msgs.Items[1].ID}, "oldest first")

	conv = call[conversation](t, o, "POST", "/api/v1/conversations/"+id(w.conv.ID)+"/handoff", key, map[string]string{"to": "bot"}, 200)
	require.EqualValues(t, "bot", conv.Status)
}

func TestAPITraceFollowsTheReply(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	w := newWorld(t, o)
	key := edgetest.Bearer(w.ten.APIKey)
	ctx := context.Background()
	pool := testdb.Pool(t)

	// The turn writes a bot reply to the inbound message; its send records an attempt.
	replyID, err := store.InsertOutbound(ctx, pool, store.Outbound{
		TenantID: w.ten.ID, ConversationID: w.conv.ID, Author: "bot", Body: "Hi!", ReplyToID: &w.msg.ID,
		Agent: "assistant", EventKind: "turn.replied", Event: map[string]any{"agent": "assistant", "why": "keyword hello"},
	})
	require.NoError(t, err)
	require.NoError(t, store.AddEvent(ctx, pool, w.ten.ID, replyID, "send.accepted", map[string]any{"twilio_sid": "SMx"}))

	// Either end of the exchange tells the whole story, in order.
	for _, msgID := range []int64{w.msg.ID, replyID} {
		tr := call[trace](t, o, "GET", "/api/v1/messages/"+id(msgID)+"/trace", key, nil, 200)
		require.Equal(t, msgID, tr.Message.ID)
		var kinds []string
		for _, e := range tr.Events {
			kinds = append(kinds, e.Kind)
		}
		require.Equal(t, []string{"webhook.received", "turn.replied", "send.accepted"}, kinds)
		require.Equal(t, w.msg.ID, tr.Events[0].MessageID)
		require.Equal(t, replyID, tr.Events[2].MessageID)
		require.Len(t, tr.Related, 1)
	}
	// Another tenant's key sees neither.
	other := testdb.NewTenant(t, pool, 0)
	call[apiError](t, o, "GET", "/api/v1/messages/"+id(replyID)+"/trace", edgetest.Bearer(other.APIKey), nil, 404)
}

func TestAPIHumanSendRefusedForClosedOrOptedOut(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	w := newWorld(t, o)
	key := edgetest.Bearer(w.ten.APIKey)
	ctx := context.Background()
	pool := testdb.Pool(t)
	path := "/api/v1/conversations/" + id(w.conv.ID) + "/messages"

	_, err := pool.Exec(ctx, `UPDATE contacts SET opted_out = true WHERE tenant_id = $1`, w.ten.ID)
	require.NoError(t, err)
	e := call[apiError](t, o, "POST", path, key, map[string]string{"body": "hi"}, 409)
	require.Contains(t, e.Error.Message, "opted out")

	_, err = pool.Exec(ctx, `UPDATE conversations SET status = 'closed' WHERE id = $1`, w.conv.ID)
	require.NoError(t, err)
	call[apiError](t, o, "POST", path, key, map[string]string{"body": "hi"}, 409)
	call[apiError](t, o, "POST", "/api/v1/conversations/"+id(w.conv.ID)+"/handoff", key, map[string]string{"to": "bot"}, 409)

	var outbound int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM messages WHERE tenant_id = $1 AND direction = 'outbound'`, w.ten.ID).Scan(&outbound))
	require.Zero(t, outbound)
}

func TestAPIConversationsPaginate(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 5)
	for range 5 {
		form := edgetest.InboundForm(ten, "whatsapp:"+testdb.PhoneNumber(), "hi")
		require.Equal(t, http.StatusOK, edgetest.Post(t, o.H, "/twilio/inbound", ten.AuthToken, form).Code)
	}
	var seen []int64
	path := "/api/v1/conversations?limit=2"
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5)
		p := call[listOf[conversation]](t, o, "GET", path, edgetest.Bearer(ten.APIKey), nil, 200)
		for _, c := range p.Items {
			seen = append(seen, c.ID)
		}
		if p.NextCursor == nil {
			break
		}
		require.Len(t, p.Items, 2)
		path = "/api/v1/conversations?limit=2&cursor=" + *p.NextCursor
	}
	require.Len(t, seen, 5)
	for i := 1; i < len(seen); i++ {
		require.Greater(t, seen[i-1], seen[i], "newest first, no repeats")
	}

	// The operator may narrow to one tenant.
	all := call[listOf[conversation]](t, o, "GET", "/api/v1/conversations?limit=200&tenant_id="+ten.ID, edgetest.Bearer(o.Admin), nil, 200)
	require.Len(t, all.Items, 5)
}

func TestAPITenantIsolation(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	a, b := newWorld(t, o), newWorld(t, o)

	for _, pair := range [][2]world{{a, b}, {b, a}} {
		me, them := pair[0], pair[1]
		key := edgetest.Bearer(me.ten.APIKey)

		// Another tenant's ids answer 404 on every endpoint.
		for _, r := range []struct{ method, path string }{
			{"POST", "/api/v1/tenants/" + them.ten.ID + "/accounts"},
			{"PUT", "/api/v1/tenants/" + them.ten.ID + "/agents/sales"},
			{"GET", "/api/v1/conversations/" + id(them.conv.ID) + "/messages"},
			{"POST", "/api/v1/conversations/" + id(them.conv.ID) + "/messages"},
			{"POST", "/api/v1/conversations/" + id(them.conv.ID) + "/handoff"},
			{"GET", "/api/v1/messages/" + id(them.msg.ID) + "/trace"},
		} {
			var body any
			switch {
			case strings.HasSuffix(r.path, "/accounts"):
				body = map[string]any{"account_sid": "AC" + testdb.Unique(), "auth_token": "tok", "numbers": []string{testdb.PhoneNumber()}}
			case strings.HasSuffix(r.path, "/handoff"):
				body = map[string]string{"to": "human"}
			case r.method != "GET":
				body = map[string]string{"body": "hi"}
			}
			e := call[apiError](t, o, r.method, r.path, key, body, 404)
			require.Equal(t, "not_found", e.Error.Code, r.path)
		}

		// Lists and look-ups show only the caller's rows.
		convs := call[listOf[conversation]](t, o, "GET", "/api/v1/conversations?limit=200", key, nil, 200)
		require.Len(t, convs.Items, 1)
		require.Equal(t, me.conv.ID, convs.Items[0].ID)
		narrowed := call[listOf[conversation]](t, o, "GET", "/api/v1/conversations?tenant_id="+them.ten.ID, key, nil, 200)
		require.Empty(t, narrowed.Items)
		found := call[listOf[message]](t, o, "GET", "/api/v1/messages?twilio_sid="+them.sid, key, nil, 200)
		require.Empty(t, found.Items)
	}

	// Nothing changed for either tenant.
	for _, w := range []world{a, b} {
		conv := call[listOf[conversation]](t, o, "GET", "/api/v1/conversations", edgetest.Bearer(w.ten.APIKey), nil, 200)
		require.EqualValues(t, "bot", conv.Items[0].Status)
		msgs := call[listOf[message]](t, o, "GET", "/api/v1/conversations/"+id(w.conv.ID)+"/messages", edgetest.Bearer(w.ten.APIKey), nil, 200)
		require.Len(t, msgs.Items, 1)
		var accounts, agents int
		require.NoError(t, testdb.Pool(t).QueryRow(context.Background(),
			`SELECT (SELECT count(*) FROM twilio_accounts WHERE tenant_id = $1), (SELECT count(*) FROM agents WHERE tenant_id = $1)`,
			w.ten.ID).Scan(&accounts, &agents))
		require.Equal(t, 1, accounts)
		require.Equal(t, 1, agents)
	}

	// The operator sees both.
	for _, w := range []world{a, b} {
		tr := call[trace](t, o, "GET", "/api/v1/messages/"+id(w.msg.ID)+"/trace", edgetest.Bearer(o.Admin), nil, 200)
		require.Equal(t, w.msg.ID, tr.Message.ID)
		found := call[listOf[message]](t, o, "GET", "/api/v1/messages?twilio_sid="+w.sid, edgetest.Bearer(o.Admin), nil, 200)
		require.Len(t, found.Items, 1)
	}
}

func TestAPIAuthFailures(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	w := newWorld(t, o)
	routes := []struct{ method, path string }{
		{"POST", "/api/v1/tenants"},
		{"POST", "/api/v1/tenants/" + w.ten.ID + "/accounts"},
		{"POST", "/api/v1/tenants/" + w.ten.ID + "/credits"},
		{"PUT", "/api/v1/tenants/" + w.ten.ID + "/agents/sales"},
		{"GET", "/api/v1/conversations"},
		{"GET", "/api/v1/conversations/" + id(w.conv.ID) + "/messages"},
		{"POST", "/api/v1/conversations/" + id(w.conv.ID) + "/messages"},
		{"POST", "/api/v1/conversations/" + id(w.conv.ID) + "/handoff"},
		{"GET", "/api/v1/messages?twilio_sid=" + w.sid},
		{"GET", "/api/v1/messages/" + id(w.msg.ID) + "/trace"},
	}
	for _, auth := range []string{
		"",
		edgetest.Bearer("wrong"),
		edgetest.Bearer(o.Admin + "x"),
		"Bearer ",
		"Basic " + edgetest.Basic("admin", "wrong"),
		"Basic " + edgetest.Basic("root", o.Admin),
		"Basic " + edgetest.Basic("admin", w.ten.APIKey),
		"Token " + o.Admin,
		"Basic !!!",
		edgetest.Bearer(strings.Repeat("k", 10000)),
	} {
		for _, r := range routes {
			e := call[apiError](t, o, r.method, r.path, auth, "{}", 401)
			require.Equal(t, "unauthorized", e.Error.Code, "%q %s %s", auth, r.method, r.path)
		}
	}

	// A tenant key on the operator's endpoints is forbidden, even for itself.
	key := edgetest.Bearer(w.ten.APIKey)
	call[apiError](t, o, "POST", "/api/v1/tenants", key, map[string]string{"name": "x"}, 403)
	call[apiError](t, o, "POST", "/api/v1/tenants/"+w.ten.ID+"/credits", key, map[string]any{"amount": 1000}, 403)
	ten, err := store.GetTenant(context.Background(), testdb.Pool(t), w.ten.ID)
	require.NoError(t, err)
	require.EqualValues(t, 5, ten.Credits)

	// The admin token works as Bearer and as basic auth.
	call[listOf[conversation]](t, o, "GET", "/api/v1/conversations?limit=1", edgetest.Bearer(o.Admin), nil, 200)
	call[listOf[conversation]](t, o, "GET", "/api/v1/conversations?limit=1", "Basic "+edgetest.Basic("admin", o.Admin), nil, 200)
}

func TestAPIBadInputIsNever500(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	w := newWorld(t, o)
	admin := edgetest.Bearer(o.Admin)
	conv := "/api/v1/conversations/" + id(w.conv.ID)
	tenant := "/api/v1/tenants/" + w.ten.ID

	tests := []struct {
		method, path string
		body         any
		status       int
	}{
		{"POST", "/api/v1/tenants", "", 400},
		{"POST", "/api/v1/tenants", "{", 400},
		{"POST", "/api/v1/tenants", "[]", 400},
		{"POST", "/api/v1/tenants", "null", 400},
		{"POST", "/api/v1/tenants", `{"name": 5}`, 400},
		{"POST", "/api/v1/tenants", `{"name": "  "}`, 400},
		{"POST", "/api/v1/tenants", `{"name": "a"} {"name": "b"}`, 400},
		{"POST", "/api/v1/tenants", `{"name": "a", "nmae": "b"}`, 400},
		{"POST", "/api/v1/tenants", `{"name": "` + strings.Repeat("a", 70<<10) + `"}`, 413},
		{"POST", "/api/v1/tenants", `{"name": 1e400}`, 400},
		{"POST", tenant + "/accounts", `{"account_sid": "AC1", "auth_token": "t", "numbers": ["5551234"]}`, 400},
		{"POST", tenant + "/accounts", `{"account_sid": "AC1", "auth_token": "t", "numbers": []}`, 400},
		{"POST", tenant + "/accounts", `{"account_sid": "", "auth_token": "t", "numbers": ["+15551234567"]}`, 400},
		{"POST", tenant + "/accounts", `{"account_sid": "AC1", "numbers": ["+15551234567"]}`, 400},
		{"POST", tenant + "/accounts", `{"account_sid": "AC1", "auth_token": "t", "numbers": "+15551234567"}`, 400},
		{"POST", "/api/v1/tenants/not-a-uuid/accounts", `{"account_sid": "AC1", "auth_token": "t", "numbers": ["+15551234567"]}`, 404},
		{"POST", "/api/v1/tenants/00000000-0000-0000-0000-000000000000/accounts", `{"account_sid": "AC1", "auth_token": "t", "numbers": ["+15551234567"]}`, 404},
		{"POST", tenant + "/credits", `{"amount": -1}`, 400},
		{"POST", tenant + "/credits", `{"amount": 0}`, 400},
		{"POST", tenant + "/credits", `{"amount": 1.5}`, 400},
		{"POST", tenant + "/credits", `{"amount": "10"}`, 400},
		{"POST", tenant + "/credits", `{"amount": 99999999999999999999999}`, 400},
		{"POST", tenant + "/credits", `{}`, 400},
		{"POST", "/api/v1/tenants/nope/credits", `{"amount": 1}`, 404},
		{"PUT", tenant + "/agents/Bad%20Name", `{}`, 400},
		{"PUT", tenant + "/agents/" + strings.Repeat("a", 80), `{}`, 400},
		{"PUT", tenant + "/agents/ok", `{"tools": ["DROP TABLE"]}`, 400},
		{"PUT", tenant + "/agents/ok", `{"faq": [{"keywords": [], "answer": "x"}]}`, 400},
		{"PUT", tenant + "/agents/ok", `{"faq": [{"keywords": ["a"], "answer": ""}]}`, 400},
		{"PUT", tenant + "/agents/ok", `{"is_default": "yes"}`, 400},
		{"PUT", tenant + "/agents/ok", `{"fallback_message": "` + strings.Repeat("x", 1601) + `"}`, 400},
		{"PUT", tenant + "/agents/ok", `{"fallback_message": 7}`, 400},
		{"PUT", "/api/v1/tenants/nope/agents/ok", `{}`, 404},
		{"GET", "/api/v1/conversations?limit=0", nil, 400},
		{"GET", "/api/v1/conversations?limit=abc", nil, 400},
		{"GET", "/api/v1/conversations?limit=100000", nil, 400},
		{"GET", "/api/v1/conversations?cursor=***", nil, 400},
		{"GET", "/api/v1/conversations?cursor=bm9wZQ", nil, 400},
		{"GET", "/api/v1/conversations?status=open", nil, 400},
		{"GET", "/api/v1/conversations?tenant_id=x'--", nil, 400},
		{"GET", "/api/v1/conversations/abc/messages", nil, 404},
		{"GET", "/api/v1/conversations/-1/messages", nil, 404},
		{"GET", "/api/v1/conversations/99999999999999999999/messages", nil, 404},
		{"GET", "/api/v1/conversations/9223372036854775807/messages", nil, 404},
		{"GET", conv + "/messages?cursor=zzz", nil, 400},
		{"POST", conv + "/messages", `{"body": ""}`, 400},
		{"POST", conv + "/messages", `{"body": "` + strings.Repeat("a", 5000) + `"}`, 400},
		{"POST", conv + "/messages", `{"body": ["x"]}`, 400},
		{"POST", "/api/v1/conversations/0/messages", `{"body": "x"}`, 404},
		{"POST", conv + "/handoff", `{"to": "robot"}`, 400},
		{"POST", conv + "/handoff", `{}`, 400},
		{"GET", "/api/v1/messages", nil, 400},
		{"GET", "/api/v1/messages?twilio_sid=" + strings.Repeat("S", 500), nil, 400},
		{"GET", "/api/v1/messages/abc/trace", nil, 404},
		{"GET", "/api/v1/messages/12.5/trace", nil, 404},
		{"GET", "/api/v1/nope", nil, 404},
		{"DELETE", "/api/v1/conversations", nil, 405},
	}
	for _, tc := range tests {
		rec := o.Do(t, tc.method, tc.path, admin, tc.body)
		require.Equal(t, tc.status, rec.Code, "%s %s: %s", tc.method, tc.path, rec.Body.String())
		var e apiError
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e), "%s %s: %s", tc.method, tc.path, rec.Body.String())
		require.NotEmpty(t, e.Error.Code)
		require.NotEmpty(t, e.Error.Message)
	}
}

// The signing secret is shown at creation and on rotation only; after a
// rotation both secrets are valid (the old one for 24 h), newest first, and
// no other tenant can rotate it.
func TestAPISigningSecretRotation(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 0)
	other := testdb.NewTenant(t, testdb.Pool(t), 0)
	ctx := context.Background()
	sealer := testdb.Sealer(t)

	got, err := store.SigningSecrets(ctx, testdb.Pool(t), sealer, ten.ID)
	require.NoError(t, err)
	require.Equal(t, []string{ten.SigningSecret}, got)

	rotated := call[map[string]any](t, o, "POST", "/api/v1/tenants/"+ten.ID+"/signing-secret", edgetest.Bearer(ten.APIKey), nil, 201)
	fresh, _ := rotated["signing_secret"].(string)
	require.NotEmpty(t, fresh)
	require.NotEqual(t, ten.SigningSecret, fresh)
	until, err := time.Parse(time.RFC3339Nano, rotated["previous_valid_until"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(store.SigningOverlap), until, time.Minute)

	got, err = store.SigningSecrets(ctx, testdb.Pool(t), sealer, ten.ID)
	require.NoError(t, err)
	require.Equal(t, []string{fresh, ten.SigningSecret}, got)

	// Past the overlap only the new one signs.
	_, err = testdb.Pool(t).Exec(ctx, `UPDATE tenants SET signing_secret_prev_until = now() - interval '1 second' WHERE id = $1`, ten.ID)
	require.NoError(t, err)
	got, err = store.SigningSecrets(ctx, testdb.Pool(t), sealer, ten.ID)
	require.NoError(t, err)
	require.Equal(t, []string{fresh}, got)

	// The secret is sealed at rest, never stored as its text.
	var n int
	require.NoError(t, testdb.Pool(t).QueryRow(ctx,
		`SELECT count(*) FROM tenants WHERE position(convert_to($1, 'UTF8') in signing_secret_enc) > 0 OR position(convert_to($1, 'UTF8') in COALESCE(signing_secret_prev_enc, ''::bytea)) > 0`,
		fresh).Scan(&n))
	require.Zero(t, n)

	// Another tenant's key sees no such tenant, and nothing changes.
	call[apiError](t, o, "POST", "/api/v1/tenants/"+ten.ID+"/signing-secret", edgetest.Bearer(other.APIKey), nil, 404)
	got, err = store.SigningSecrets(ctx, testdb.Pool(t), sealer, ten.ID)
	require.NoError(t, err)
	require.Equal(t, []string{fresh}, got)
}

// A tenant from before signing secrets gets one on first use, and keeps it.
func TestSigningSecretForOlderTenant(t *testing.T) {
	t.Parallel()
	ctx, db, sealer := context.Background(), testdb.Pool(t), testdb.Sealer(t)
	ten := testdb.NewTenant(t, db, 0)
	_, err := db.Exec(ctx, `UPDATE tenants SET signing_secret_enc = NULL WHERE id = $1`, ten.ID)
	require.NoError(t, err)
	first, err := store.SigningSecrets(ctx, db, sealer, ten.ID)
	require.NoError(t, err)
	require.Len(t, first, 1)
	require.NotEqual(t, ten.SigningSecret, first[0])
	again, err := store.SigningSecrets(ctx, db, sealer, ten.ID)
	require.NoError(t, err)
	require.Equal(t, first, again)
	_, err = store.SigningSecrets(ctx, db, sealer, "00000000-0000-0000-0000-000000000000")
	require.ErrorIs(t, err, store.ErrNotFound)
}
