package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
)

// TestBroadcastSendCommand runs `conversa broadcast send` against a running
// server (sandbox Twilio): a CSV with a header, a second column, blank
// lines, a duplicate and invalid numbers; the invalid ones are listed and
// not sent, the rest get one template message each, and the command waits
// until every one is delivered and prints the counts. Bad flags exit
// non-zero with a one-line reason naming the flag.
func TestBroadcastSendCommand(t *testing.T) {
	t.Parallel()
	// A database of its own: another test's server must not work (and,
	// stopping, strand) this one's sends, nor this one another's.
	dbURL := testdb.OwnURL(t)
	_, e, _ := startServer(t, env{"DATABASE_URL": dbURL})

	code, out, stderr := runCLI(t, e, "tenant", "create", "--name", "Broadcaster", "--json")
	require.Equal(t, 0, code, stderr)
	var ten struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &ten))
	wa := "whatsapp:" + testdb.PhoneNumber()
	code, _, stderr = runCLI(t, e, "account", "add", "--tenant", ten.ID, "--sid", "AC"+testdb.Unique(), "--token", "tok123", "--number", wa)
	require.Equal(t, 0, code, stderr)

	nums := []string{testdb.PhoneNumber(), testdb.PhoneNumber(), testdb.PhoneNumber()}
	csv := "phone,name\n" + nums[0] + ",Ana\n\n" + nums[1] + ",Bo\n" + "whatsapp:" + nums[2] + "\n" + nums[0] + ",Ana again\n" +
		"12345,Too short\n" + "+1 555 abc,Letters\n"
	file := filepath.Join(t.TempDir(), "numbers.csv")
	require.NoError(t, os.WriteFile(file, []byte(csv), 0o600))

	code, out, stderr = runCLI(t, e, "broadcast", "send", "--tenant", ten.ID, "--from", wa, "--content-sid", "HXcli",
		"--content-variables", `{"1":"Monday"}`, "--name", "cli", "--to-file", file, "--json")
	require.Equal(t, 0, code, stderr)
	var got struct {
		ID         int64          `json:"id"`
		Recipients int            `json:"recipients"`
		Queued     int            `json:"queued"`
		Invalid    []string       `json:"invalid"`
		Counts     map[string]int `json:"counts"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Equal(t, 5, got.Recipients)
	require.Equal(t, 3, got.Queued)
	require.Equal(t, []string{"12345", "+1 555 abc"}, got.Invalid)
	require.Equal(t, map[string]int{"delivered": 3}, got.Counts, "it waited for every final status")
	require.Contains(t, stderr, fmt.Sprintf("broadcast %d", got.ID), "the progress bar")

	pool, err := pgxpool.New(t.Context(), dbURL)
	require.NoError(t, err)
	defer pool.Close()
	var sent int
	require.NoError(t, pool.QueryRow(t.Context(), `
		SELECT count(*) FROM messages WHERE broadcast_id = $1 AND twilio_sid IS NOT NULL AND body = '[template HXcli]'`, got.ID).Scan(&sent))
	require.Equal(t, 3, sent)

	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"--from", wa, "--body", "hi"}, "--content-sid"},
		{[]string{"--from", "+15550000000", "--content-sid", "HX1"}, "--from"},
		{[]string{"--from", wa, "--content-sid", "HX1", "--content-variables", "[1]"}, "--content-variables"},
		{[]string{"--from", wa, "--content-sid", "HX1", "--to-file", filepath.Join(t.TempDir(), "missing.csv")}, "--to-file"},
	} {
		args := append([]string{"broadcast", "send", "--tenant", ten.ID, "--to-file", file}, c.args...)
		code, _, stderr := runCLI(t, e, args...)
		require.NotEqual(t, 0, code, c.args)
		require.Contains(t, stderr, c.flag, c.args)
		require.Equal(t, 1, strings.Count(strings.TrimSpace(stderr), "\n")+1, "one line: %q", stderr)
	}
}
