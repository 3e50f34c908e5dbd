package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
)

// TestDemoVoiceNoteIsFetchedFromTheSandboxAndAnswered is not parallel: it
// runs, and its server stops, before the parallel tests start theirs. Two
// servers on the test binary's one database work each other's jobs, and the
// one that stops first takes its sandbox, and the status callbacks of the
// other's replies it sent, with it.
func TestDemoVoiceNoteIsFetchedFromTheSandboxAndAnswered(t *testing.T) {
	base, e, logs := startServer(t, env{"DEBOUNCE": "0"})
	code, out, stderr := runCLI(t, env{"DATABASE_URL": e["DATABASE_URL"], "PUBLIC_BASE_URL": base}, "demo", "--voice")
	require.Equal(t, 0, code, "demo failed: %s\n%s\nserver log:\n%s", stderr, out, logs.String())
	require.Contains(t, out, "media.fetched", "the voice note was fetched from the sandbox Twilio")
	require.Contains(t, out, "Heard:   [voice note]", "offline, the agent reads [voice note]")
	require.Contains(t, out, "delivered")
}

func TestMediaVariablesAreChecked(t *testing.T) {
	t.Parallel()
	code, _, stderr := runCLI(t, env{"DATABASE_URL": testdb.URL(t), "MEDIA_MAX_BYTES": "lots", "TOOLS_ALLOW_PRIVATE": "yes"}, "migrate")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "MEDIA_MAX_BYTES")
	require.Contains(t, stderr, "TOOLS_ALLOW_PRIVATE")
}
