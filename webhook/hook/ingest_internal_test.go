package hook

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

// TestGroupCommitIsolatesABadMessage sends a burst of concurrent messages,
// one of which cannot be stored: every good one commits with its turn job,
// only the bad one fails.
func TestGroupCommitIsolatesABadMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	require.NoError(t, err)
	s := New(Deps{DB: pool, River: rc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ten := testdb.NewTenant(t, pool, 0)
	ch, err := store.ChannelByAddress(ctx, pool, ten.WhatsApp)
	require.NoError(t, err)

	const n = 40
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := store.Inbound{TenantID: ten.ID, ChannelID: ch.ID, From: "whatsapp:" + testdb.PhoneNumber(),
				MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "hi"}
			if i == 7 {
				in.ChannelID = -1 // no such channel: a foreign-key violation
			}
			_, errs[i] = s.group.ingest(ctx, in)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i == 7 {
			require.Error(t, err)
		} else {
			require.NoError(t, err, i)
		}
	}
	var msgs, jobs int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM messages WHERE tenant_id = $1`, ten.ID).Scan(&msgs))
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE args->>'tenant_id' = $1`, ten.ID).Scan(&jobs))
	require.Equal(t, n-1, msgs)
	require.Equal(t, n-1, jobs)
}
