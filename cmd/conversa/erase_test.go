package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

func TestContactEraseCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := env{"DATABASE_URL": testdb.URL(t)}
	pool := testdb.Pool(t)
	ten := testdb.NewTenant(t, pool, 0)
	ch, err := store.ChannelByAddress(ctx, pool, ten.SMS)
	require.NoError(t, err)
	from := testdb.PhoneNumber()
	res, err := store.InsertInbound(ctx, pool, store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: from, ProfileName: "Ana",
		MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "call me at home"})
	require.NoError(t, err)

	code, _, stderr := runCLI(t, e, "contact", "erase", "--tenant", ten.ID, "5551234")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "want +E.164")
	code, _, stderr = runCLI(t, e, "contact", "erase", "--tenant", ten.ID, testdb.PhoneNumber())
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "has no contact")

	code, out, stderr := runCLI(t, e, "contact", "erase", "--tenant", ten.ID, from, "--json")
	require.Equal(t, 0, code, stderr)
	var got struct {
		Erased []struct {
			ContactID int64 `json:"contact_id"`
		} `json:"erased"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Equal(t, []int64{res.ContactID}, []int64{got.Erased[0].ContactID})
	var address, by, body string
	require.NoError(t, pool.QueryRow(ctx, `SELECT address FROM contacts WHERE id = $1`, res.ContactID).Scan(&address))
	require.NoError(t, pool.QueryRow(ctx, `SELECT body FROM messages WHERE id = $1`, res.MessageID).Scan(&body))
	require.NoError(t, pool.QueryRow(ctx, `SELECT requested_by FROM erasures WHERE contact_id = $1`, res.ContactID).Scan(&by))
	require.NotEqual(t, from, address)
	require.Empty(t, body)
	require.Equal(t, store.RequestedByCLI, by)
}
