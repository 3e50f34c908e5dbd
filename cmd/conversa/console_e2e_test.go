package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twiliohook"
	"github.com/conversa/conversa/store"
)

// consoleE2EDir holds the browser test and its pinned playwright-core.
const consoleE2EDir = "../../webhook/console/e2e"

// chromiumPath finds Debian's Chromium (CHROMIUM overrides).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("the console's browser test needs Chromium: apt-get install -y chromium (.ci/run does)")
	return ""
}

// TestConsoleInBrowser runs the real server (`conversa run` on a loopback
// port, fake Twilio, offline agent) and drives the console in Chromium:
// sign-in, the list updating when a customer writes, take over, a reply that
// Twilio receives once despite a double click, hand back, a trace, an agent
// edit, usage, and another tenant's conversation answering 404 both ways.
// CONSOLE_SCREENSHOTS=dir keeps a screenshot of each page there.
func TestConsoleInBrowser(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	if _, err := os.Stat(filepath.Join(consoleE2EDir, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed: run `npm ci` in webhook/console/e2e (make test and .ci/run do)")
	}

	tw := faketwilio.New(faketwilio.Options{AnyAccount: true})
	twURL, err := tw.Start()
	require.NoError(t, err)
	t.Cleanup(tw.Close)
	// A database of its own: another test's server would otherwise work this
	// test's send jobs through its own Twilio.
	dbURL := testdb.OwnURL(t)
	pool, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	base, _, logs := startServer(t, env{
		"DATABASE_URL":   dbURL,
		"TWILIO_API_URL": twURL,
		"SECRET_KEY":     hex.EncodeToString([]byte("0123456789abcdef0123456789abcdef")),
	})
	a, b := testdb.NewTenant(t, pool, 20), testdb.NewTenant(t, pool, 20)
	poster := &twiliohook.Poster{HC: &http.Client{Timeout: 10 * time.Second}, Target: base, PublicBaseURL: base}
	inbound := func(ten testdb.Tenant, from, name, body string) {
		sid := "SM" + testdb.Unique() + testdb.Unique()
		status, err := poster.Post(context.Background(), "/twilio/inbound", ten.AuthToken, url.Values{
			"MessageSid": {sid}, "AccountSid": {ten.AccountSID}, "From": {from}, "To": {ten.WhatsApp},
			"Body": {body}, "NumMedia": {"0"}, "ProfileName": {name},
		})
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status)
	}

	// Tenant B has a conversation of its own, for the 404 checks.
	inbound(b, "whatsapp:"+testdb.PhoneNumber(), "B Customer", "hello")
	var convB int64
	require.Eventually(t, func() bool {
		list, err := store.ListConversations(context.Background(), pool, store.TenantScope(b.ID), store.ConversationFilter{Limit: 1})
		if err == nil && len(list) == 1 {
			convB = list[0].ID
		}
		return convB != 0
	}, 10*time.Second, 50*time.Millisecond)

	customer := "whatsapp:" + testdb.PhoneNumber()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--test-reporter=spec", "console.test.mjs")
	cmd.Dir = consoleE2EDir
	cmd.Env = append(os.Environ(),
		"BASE_URL="+base, "KEY_A="+a.APIKey, "KEY_B="+b.APIKey, fmt.Sprintf("CONV_B=%d", convB),
		"CHROMIUM="+chromium, "SCREENSHOTS="+screenshotDir(t))
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())

	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		if strings.Contains(line, "READY inbound") {
			inbound(a, customer, "Ada Lovelace", "Hi! What are your opening hours?")
			_, _ = io.WriteString(stdin, "posted Ada Lovelace\n")
		}
	}
	err = cmd.Wait()
	require.NoError(t, err, "browser test failed:\n%s\n%s\nserver log:\n%s", out.String(), stderr.String(), logs.String())
	t.Log(out.String())

	// The person's reply reached Twilio once, although Send was double-clicked.
	var personal int
	for _, m := range tw.Accepted(customer) {
		if strings.Contains(m.Body, "A person here") {
			personal++
		}
	}
	require.Equal(t, 1, personal, "the fake Twilio received the person's reply exactly once")
}

// screenshotDir is CONSOLE_SCREENSHOTS (made absolute) or a temporary dir.
func screenshotDir(t *testing.T) string {
	d := os.Getenv("CONSOLE_SCREENSHOTS")
	if d == "" {
		return t.TempDir()
	}
	abs, err := filepath.Abs(d)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(abs, 0o755))
	return abs
}
