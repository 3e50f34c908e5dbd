package jobs_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twilio/signature"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/webhook"
)

// TestSignedInboundBurstEndsInOneReply runs the real path: signed Twilio
// webhooks into the HTTP edge, a River client working conversa.reply with
// the offline provider and a debounce, committed to the database.
func TestSignedInboundBurstEndsInOneReply(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t)
	ten := testdb.NewTenant(t, pool, 3)
	const debounce = 300 * time.Millisecond
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	workers := river.NewWorkers()
	require.NoError(t, jobs.AddWorkers(workers, jobs.Deps{
		DB: pool, Logger: logger, Debounce: debounce, Memory: testMemory(t, testRedis(t)),
	}))
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Logger:  logger,
		Workers: workers,
		// conversa.send is inserted, not worked, here: its worker is not in this test.
		SkipUnknownJobCheck: true,
		Queues:              map[string]river.QueueConfig{jobargs.QueueReply: {MaxWorkers: 2, FetchCooldown: 5 * time.Millisecond, FetchPollInterval: 50 * time.Millisecond}},
		Middleware:          []rivertype.Middleware{&jobargs.ShortDelayMiddleware{MaxDelay: 5 * time.Second, Now: time.Now}},
	})
	require.NoError(t, err)
	require.NoError(t, rc.Start(ctx))
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rc.Stop(stopCtx)
	})

	h := webhook.NewHandler(webhook.Deps{
		DB: pool, River: rc, Sealer: testdb.Sealer(t), Logger: logger,
		PublicBaseURL: "https://conversa.example.com", Debounce: debounce,
	})
	from := "whatsapp:" + testdb.PhoneNumber()
	for _, body := range []string{"hi", "what are your hours", "and prices?"} {
		form := url.Values{
			"MessageSid": {"SM" + testdb.Unique() + testdb.Unique()}, "AccountSid": {ten.AccountSID},
			"From": {from}, "To": {ten.WhatsApp}, "Body": {body}, "NumMedia": {"0"},
		}
		req := httptest.NewRequest(http.MethodPost, "/twilio/inbound", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Twilio-Signature", signature.Sign(ten.AuthToken, "https://conversa.example.com/twilio/inbound", form))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code)
	}

	// Every turn job of the burst finishes: two superseded, one answering.
	require.Eventually(t, func() bool {
		var pending int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'conversa.reply'
			AND args->>'tenant_id' = $1 AND state <> 'completed'`, ten.ID).Scan(&pending)
		return err == nil && pending == 0
	}, 15*time.Second, 20*time.Millisecond)

	var replies, sendJobs, replyJobs int
	var credits int64
	var body string
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), max(body) FROM messages WHERE tenant_id = $1 AND direction = 'outbound'`, ten.ID).Scan(&replies, &body))
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'conversa.send' AND args->>'tenant_id' = $1`, ten.ID).Scan(&sendJobs))
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'conversa.reply' AND args->>'tenant_id' = $1`, ten.ID).Scan(&replyJobs))
	require.NoError(t, pool.QueryRow(ctx, `SELECT COALESCE(sum(credits), 0)::bigint FROM credit_stripes WHERE tenant_id = $1`, ten.ID).Scan(&credits))
	require.Equal(t, 3, replyJobs)
	require.Equal(t, 1, replies, "one reply for the burst")
	require.Contains(t, body, "Monday to Friday", "the reply answers the burst's questions")
	require.Equal(t, 1, sendJobs)
	require.EqualValues(t, 2, credits)
}
