package console_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/console"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	testdb.Run(m)
}

// TestVendoredHTMX checks the embedded htmx against the version and
// checksum static/VENDOR.md records.
func TestVendoredHTMX(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("static/VENDOR.md")
	require.NoError(t, err)
	row := regexp.MustCompile("`htmx.min.js` \\| npm `htmx.org`[^|]*\\| ([0-9.]+) \\| `([0-9a-f]{64})`").FindStringSubmatch(string(doc))
	require.NotNil(t, row, "VENDOR.md names htmx's version and sha256")
	js, err := os.ReadFile("static/htmx.min.js")
	require.NoError(t, err)
	sum := sha256.Sum256(js)
	require.Equal(t, row[2], hex.EncodeToString(sum[:]))
	require.Contains(t, string(js), `version:"`+row[1]+`"`)
	lock, err := os.ReadFile("e2e/package-lock.json")
	require.NoError(t, err)
	require.Contains(t, string(lock), `"node_modules/htmx.org": {
      "version": "`+row[1]+`"`, "the lockfile pins the vendored version")
}

// fixture is a console on a real database with two tenants, each with one
// conversation that has one inbound message.
type fixture struct {
	srv   *httptest.Server
	admin string
	a, b  tenantConv
}

type tenantConv struct {
	ten   testdb.Tenant
	conv  int64
	inMsg int64
}

func newFixture(t *testing.T, secure bool) fixture {
	t.Helper()
	pool := testdb.Pool(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	require.NoError(t, err)
	r := gin.New()
	admin := "admin-" + testdb.Unique()
	require.NoError(t, console.Mount(r, console.Deps{
		DB: pool, River: rc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), AdminToken: admin, Secure: secure,
	}))
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	mk := func() tenantConv {
		ten := testdb.NewTenant(t, pool, 5)
		ch, err := store.ChannelByAddress(context.Background(), pool, ten.WhatsApp)
		require.NoError(t, err)
		in, err := store.InsertInbound(context.Background(), pool, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID,
			From: "whatsapp:" + testdb.PhoneNumber(), ProfileName: "Customer " + ten.ID[:4], MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "hi"})
		require.NoError(t, err)
		return tenantConv{ten: ten, conv: in.ConversationID, inMsg: in.MessageID}
	}
	return fixture{srv: srv, admin: admin, a: mk(), b: mk()}
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

func (f fixture) browser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &browser{t: t, base: f.srv.URL, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

var csrfRE = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)
var formKeyRE = regexp.MustCompile(`name="form_key" value="([^"]+)"`)

func (b *browser) get(path string) (int, string) {
	resp, err := b.hc.Get(b.base + path)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if m := csrfRE.FindStringSubmatch(string(body)); m != nil {
		b.csrf = m[1]
	}
	return resp.StatusCode, string(body)
}

func (b *browser) post(path string, form url.Values) (*http.Response, string) {
	resp, err := b.hc.PostForm(b.base+path, form)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (b *browser) signIn(key string) *http.Response {
	b.get("/console/login")
	resp, _ := b.post("/console/login", url.Values{"api_key": {key}, "csrf_token": {b.csrf}})
	b.get("/console/conversations")
	return resp
}

// form is a state-changing form with the session's CSRF token.
func (b *browser) form(kv ...string) url.Values {
	v := url.Values{"csrf_token": {b.csrf}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

func conversationStatus(t *testing.T, tc tenantConv) string {
	c, err := store.FindConversation(context.Background(), testdb.Pool(t), store.TenantScope(tc.ten.ID), tc.conv)
	require.NoError(t, err)
	return string(c.Status)
}

func messageCount(t *testing.T, tc tenantConv) int {
	list, err := store.ListMessages(context.Background(), testdb.Pool(t), store.TenantScope(tc.ten.ID), tc.conv, 0, 1000)
	require.NoError(t, err)
	return len(list)
}

func TestSignInCookieAndSignOut(t *testing.T) {
	t.Parallel()
	for _, secure := range []bool{false, true} {
		f := newFixture(t, secure)
		b := f.browser(t)
		b.get("/console/login")
		resp, body := b.post("/console/login", url.Values{"api_key": {"cvk_wrong"}, "csrf_token": {b.csrf}})
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		require.Contains(t, body, "not valid")

		resp = b.signIn(f.a.ten.APIKey)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		var session *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "conversa_console" {
				session = c
			}
		}
		require.NotNil(t, session)
		require.True(t, session.HttpOnly)
		require.Equal(t, http.SameSiteLaxMode, session.SameSite)
		require.Equal(t, secure, session.Secure, "Secure exactly when served over https")
		require.NotContains(t, session.Value, f.a.ten.APIKey)

		code, _ := b.get("/console/conversations")
		require.Equal(t, http.StatusOK, code)
		resp, _ = b.post("/console/logout", b.form())
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		resp2, err := b.hc.Get(b.base + "/console/conversations")
		require.NoError(t, err)
		resp2.Body.Close()
		require.Equal(t, http.StatusSeeOther, resp2.StatusCode)
		require.Equal(t, "/console/login", resp2.Header.Get("Location"))
	}
}

func TestLoginNeedsItsFormToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	b := f.browser(t)
	resp, _ := b.post("/console/login", url.Values{"api_key": {f.a.ten.APIKey}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	for _, c := range resp.Cookies() {
		require.NotEqual(t, "conversa_console", c.Name, "no session without the form's token")
	}
}

func TestFormsWithoutCSRFTokenChangeNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	b := f.browser(t)
	b.signIn(f.a.ten.APIKey)
	conv := fmt.Sprintf("/console/conversations/%d", f.a.conv)
	for _, tok := range []string{"", "forged"} {
		for _, path := range []string{conv + "/takeover", conv + "/reply", "/console/agents/assistant"} {
			resp, body := b.post(path, url.Values{"csrf_token": {tok}, "body": {"hello"}, "form_key": {strings.Repeat("k", 20)}, "keywords": {"x"}})
			require.Equal(t, http.StatusForbidden, resp.StatusCode, path)
			require.Contains(t, body, "Reload the page")
		}
	}
	require.Equal(t, "bot", conversationStatus(t, f.a))
	require.Equal(t, 1, messageCount(t, f.a), "no message was written")
	agents, err := store.ListAgents(context.Background(), testdb.Pool(t), f.a.ten.ID)
	require.NoError(t, err)
	require.Empty(t, agents[0].Keywords, "the agent was not changed")
}

// TestAnotherTenantIs404 tries every page and form of the console on the
// other tenant's conversation and message, both ways round.
func TestAnotherTenantIs404(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	for _, pair := range [][2]tenantConv{{f.a, f.b}, {f.b, f.a}} {
		me, them := pair[0], pair[1]
		b := f.browser(t)
		b.signIn(me.ten.APIKey)
		code, body := b.get(fmt.Sprintf("/console/conversations/%d", me.conv))
		require.Equal(t, http.StatusOK, code)
		require.NotContains(t, body, fmt.Sprintf("/console/conversations/%d\"", them.conv))
		_, list := b.get("/console/conversations")
		require.NotContains(t, list, fmt.Sprintf("/console/conversations/%d\"", them.conv), "the list shows only my conversations")

		for _, path := range []string{
			fmt.Sprintf("/console/conversations/%d", them.conv),
			fmt.Sprintf("/console/messages/%d/trace", them.inMsg),
		} {
			code, _ := b.get(path)
			require.Equal(t, http.StatusNotFound, code, path)
		}
		fk := formKey(t, b, me.conv)
		for _, path := range []string{"takeover", "handback", "reply"} {
			resp, _ := b.post(fmt.Sprintf("/console/conversations/%d/%s", them.conv, path), b.form("body", "hi", "form_key", fk))
			require.Equal(t, http.StatusNotFound, resp.StatusCode, path)
		}
		require.Equal(t, "bot", conversationStatus(t, them))
		require.Equal(t, 1, messageCount(t, them))
	}
}

func formKey(t *testing.T, b *browser, conv int64) string {
	_, body := b.get(fmt.Sprintf("/console/conversations/%d", conv))
	m := formKeyRE.FindStringSubmatch(body)
	require.NotNil(t, m)
	return m[1]
}

func TestReplyIsIdempotentAndBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	b := f.browser(t)
	b.signIn(f.a.ten.APIKey)
	conv := fmt.Sprintf("/console/conversations/%d", f.a.conv)

	resp, body := b.post(conv+"/reply", b.form("body", "   ", "form_key", formKey(t, b, f.a.conv)))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "body is required")
	resp, body = b.post(conv+"/reply", b.form("body", "hello"))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "reload the page")
	resp, _ = b.post(conv+"/reply", b.form("body", strings.Repeat("x", 4097), "form_key", formKey(t, b, f.a.conv)))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	code, _ := b.get("/console/conversations?status=open")
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = b.get("/console/conversations/abc")
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, 1, messageCount(t, f.a), "bad input wrote nothing")

	// The same form twice (a double click) sends once.
	fk := formKey(t, b, f.a.conv)
	for range 2 {
		resp, _ := b.post(conv+"/reply", b.form("body", "A person here.", "form_key", fk))
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	}
	require.Equal(t, 2, messageCount(t, f.a))
	list, err := store.ListMessages(context.Background(), testdb.Pool(t), store.TenantScope(f.a.ten.ID), f.a.conv, 0, 10)
	require.NoError(t, err)
	require.Equal(t, store.AuthorHuman, list[1].Author)
	require.Equal(t, store.StatusPending, list[1].Status, "written for conversa.send to deliver")

	// Take over, hand back; the agent form shows a bad field and writes nothing.
	resp, _ = b.post(conv+"/takeover", b.form())
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "human", conversationStatus(t, f.a))
	resp, _ = b.post(conv+"/handback", b.form())
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "bot", conversationStatus(t, f.a))
	resp, body = b.post("/console/agents/assistant", b.form("keywords", "a", "faq", "no separator here"))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, `id="err-faq"`)
	agents, err := store.ListAgents(context.Background(), testdb.Pool(t), f.a.ten.ID)
	require.NoError(t, err)
	require.Empty(t, agents[0].Keywords)
}

func TestReplyDisabledOutsideTheWhatsAppWindowAndAfterStop(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	pool := testdb.Pool(t)
	_, err := pool.Exec(context.Background(), `UPDATE conversations SET last_inbound_at = $2 WHERE id = $1`, f.a.conv, time.Now().Add(-25*time.Hour))
	require.NoError(t, err)
	_, err = pool.Exec(context.Background(), `UPDATE contacts SET opted_out = true WHERE id = (SELECT contact_id FROM conversations WHERE id = $1)`, f.b.conv)
	require.NoError(t, err)

	for _, c := range []struct {
		tc   tenantConv
		want string
	}{{f.a, "24-hour window"}, {f.b, "opted out"}} {
		b := f.browser(t)
		b.signIn(c.tc.ten.APIKey)
		path := fmt.Sprintf("/console/conversations/%d", c.tc.conv)
		_, body := b.get(path)
		require.Contains(t, body, c.want)
		require.Regexp(t, `<button type="submit" disabled aria-describedby="reply-blocked">Send</button>`, body)
		resp, _ := b.post(path+"/reply", b.form("body", "hi", "form_key", formKey(t, b, c.tc.conv)))
		require.Equal(t, http.StatusConflict, resp.StatusCode)
		require.Equal(t, 1, messageCount(t, c.tc))
	}
}

func TestAdminPicksATenant(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	b := f.browser(t)
	resp := b.signIn(f.admin)
	require.Equal(t, "/console/tenants", resp.Header.Get("Location"))
	resp2, err := b.hc.Get(b.base + "/console/conversations")
	require.NoError(t, err)
	resp2.Body.Close()
	require.Equal(t, "/console/tenants", resp2.Header.Get("Location"), "no tenant picked yet: nothing to list")

	code, body := b.get("/console/tenants")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, f.a.ten.ID)
	r, _ := b.post("/console/tenants", b.form("tenant_id", "00000000-0000-0000-0000-000000000000"))
	require.Equal(t, http.StatusNotFound, r.StatusCode)
	r, _ = b.post("/console/tenants", b.form("tenant_id", "not-a-uuid"))
	require.Equal(t, http.StatusNotFound, r.StatusCode)
	r, _ = b.post("/console/tenants", b.form("tenant_id", f.b.ten.ID))
	require.Equal(t, http.StatusSeeOther, r.StatusCode)
	code, _ = b.get(fmt.Sprintf("/console/conversations/%d", f.b.conv))
	require.Equal(t, http.StatusOK, code)
	code, _ = b.get(fmt.Sprintf("/console/conversations/%d", f.a.conv))
	require.Equal(t, http.StatusNotFound, code, "the operator acts as the picked tenant only")

	// A tenant key cannot use the picker.
	tb := f.browser(t)
	tb.signIn(f.a.ten.APIKey)
	r, _ = tb.post("/console/tenants", tb.form("tenant_id", f.b.ten.ID))
	require.Equal(t, http.StatusNotFound, r.StatusCode)
	code, _ = tb.get(fmt.Sprintf("/console/conversations/%d", f.b.conv))
	require.Equal(t, http.StatusNotFound, code)
}

func TestLongConversationShowsItsNewestMessages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	_, err := testdb.Pool(t).Exec(context.Background(), `INSERT INTO messages (tenant_id, conversation_id, direction, author, body, status)
		SELECT $1, $2, 'outbound', 'bot', 'reply number ' || n || '.', 'delivered' FROM generate_series(1, 250) n`, f.a.ten.ID, f.a.conv)
	require.NoError(t, err)
	b := f.browser(t)
	b.signIn(f.a.ten.APIKey)
	_, body := b.get(fmt.Sprintf("/console/conversations/%d", f.a.conv))
	require.Contains(t, body, "reply number 250.")
	require.NotContains(t, body, "reply number 1.")
}

func TestAgentFormKeepsEveryField(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	b := f.browser(t)
	b.signIn(f.a.ten.APIKey)
	resp, _ := b.post("/console/agents/assistant", b.form("system_prompt", "Be brief.", "model", "gpt-x", "keywords", "billing, invoice",
		"tools", "handoff_to_human", "faq", "refund | Five days.", "fallback_message", "A person will call you.", "vision", "on"))
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, page := b.get("/console/agents/assistant")
	require.Contains(t, page, "A person will call you.", "the form shows the stored fallback message, so a save keeps it")
	require.Contains(t, page, `name="vision" checked`, "the form shows the stored vision flag, so a save keeps it")
	agents, err := store.ListAgents(context.Background(), testdb.Pool(t), f.a.ten.ID)
	require.NoError(t, err)
	a := agents[0]
	require.Equal(t, []string{"billing", "invoice"}, a.Keywords)
	require.Equal(t, "gpt-x", a.Model)
	require.Equal(t, "A person will call you.", a.FallbackMessage)
	require.True(t, a.Vision)
	require.Equal(t, []store.FAQEntry{{Keywords: []string{"refund"}, Answer: "Five days."}}, a.FAQ)
}
