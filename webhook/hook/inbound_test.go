package hook_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

// edge is the HTTP handler on the test database, with an insert-only River client.
func edge(t *testing.T, debounce time.Duration) http.Handler {
	t.Helper()
	pool := testdb.Pool(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Middleware: []rivertype.Middleware{&jobargs.ShortDelayMiddleware{MaxDelay: 5 * time.Second, Now: time.Now}},
	})
	require.NoError(t, err)
	return webhook.NewHandler(webhook.Deps{
		DB:            pool,
		River:         rc,
		Sealer:        testdb.Sealer(t),
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		PublicBaseURL: edgetest.BaseURL,
		Debounce:      debounce,
	})
}

// counts returns the messages and reply jobs stored for a tenant.
func counts(t *testing.T, tenantID string) (messages, replyJobs int) {
	t.Helper()
	ctx := context.Background()
	pool := testdb.Pool(t)
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM messages WHERE tenant_id = $1`, tenantID).Scan(&messages))
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'conversa.reply' AND args->>'tenant_id' = $1`, tenantID).Scan(&replyJobs))
	return messages, replyJobs
}

func TestInboundStoresMessageAndTurnJob(t *testing.T) {
	t.Parallel()
	h := edge(t, 0)
	ten := testdb.NewTenant(t, testdb.Pool(t), 5)
	from := "whatsapp:" + testdb.PhoneNumber()

	rec := edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, edgetest.InboundForm(ten, from, "hello there"))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Contains(t, rec.Header().Get("Content-Type"), "text/xml")
	require.Contains(t, rec.Body.String(), "<Response/>")

	msgs, jobsN := counts(t, ten.ID)
	require.Equal(t, 1, msgs)
	require.Equal(t, 1, jobsN)

	var state string
	require.NoError(t, testdb.Pool(t).QueryRow(context.Background(),
		`SELECT state FROM river_job WHERE args->>'tenant_id' = $1`, ten.ID).Scan(&state))
	require.Equal(t, "available", state, "DEBOUNCE=0 inserts a job that runs at once")
}

func TestInboundDebouncedTurnIsAvailableNotScheduled(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t)
	h := edge(t, 1500*time.Millisecond)
	ten := testdb.NewTenant(t, pool, 5)
	rec := edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, edgetest.InboundForm(ten, "whatsapp:"+testdb.PhoneNumber(), "hi"))
	require.Equal(t, http.StatusOK, rec.Code)

	var delay float64
	var state string
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT extract(epoch FROM scheduled_at - created_at), state FROM river_job WHERE args->>'tenant_id' = $1`, ten.ID).Scan(&delay, &state))
	require.InDelta(t, 1.5, delay, 0.5, "the turn waits out the debounce window")
	require.Equal(t, "available", state, "not left to River's 5 s scheduler")
}

func TestInboundRedeliveryAddsNothing(t *testing.T) {
	t.Parallel()
	h := edge(t, 0)
	ten := testdb.NewTenant(t, testdb.Pool(t), 5)
	form := edgetest.InboundForm(ten, "whatsapp:"+testdb.PhoneNumber(), "same message")

	// 8 concurrent redeliveries, then one more after they are done.
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, form).Code
		}()
	}
	wg.Wait()
	codes = append(codes, edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, form).Code)
	for _, c := range codes {
		require.Equal(t, http.StatusOK, c)
	}
	msgs, jobsN := counts(t, ten.ID)
	require.Equal(t, 1, msgs)
	require.Equal(t, 1, jobsN)
}

func TestInboundBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	h := edge(t, 0)
	ten := testdb.NewTenant(t, testdb.Pool(t), 5)
	other := testdb.NewTenant(t, testdb.Pool(t), 5)
	from := "whatsapp:" + testdb.PhoneNumber()

	tests := []struct {
		name   string
		status int
		send   func() *httptest.ResponseRecorder
	}{
		{"missing signature", http.StatusForbidden, func() *httptest.ResponseRecorder {
			form := edgetest.InboundForm(ten, from, "x")
			req := httptest.NewRequest(http.MethodPost, "/twilio/inbound", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec
		}},
		{"wrong token", http.StatusForbidden, func() *httptest.ResponseRecorder {
			return edgetest.Post(t, h, "/twilio/inbound", "not-the-token", edgetest.InboundForm(ten, from, "x"))
		}},
		{"other tenant's token for this number", http.StatusForbidden, func() *httptest.ResponseRecorder {
			return edgetest.Post(t, h, "/twilio/inbound", other.AuthToken, edgetest.InboundForm(ten, from, "x"))
		}},
		{"unknown number", http.StatusForbidden, func() *httptest.ResponseRecorder {
			form := edgetest.InboundForm(ten, from, "x")
			form.Set("To", "whatsapp:"+testdb.PhoneNumber())
			return edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, form)
		}},
		{"account that does not own the number", http.StatusForbidden, func() *httptest.ResponseRecorder {
			form := edgetest.InboundForm(ten, from, "x")
			form.Set("AccountSid", other.AccountSID)
			return edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, form)
		}},
		{"missing MessageSid", http.StatusBadRequest, func() *httptest.ResponseRecorder {
			form := edgetest.InboundForm(ten, from, "x")
			form.Del("MessageSid")
			return edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, form)
		}},
		{"missing From", http.StatusBadRequest, func() *httptest.ResponseRecorder {
			form := edgetest.InboundForm(ten, from, "x")
			form.Del("From")
			return edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, form)
		}},
		{"missing To", http.StatusBadRequest, func() *httptest.ResponseRecorder {
			form := edgetest.InboundForm(ten, from, "x")
			form.Del("To")
			return edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, form)
		}},
		{"body over 64 KiB", http.StatusRequestEntityTooLarge, func() *httptest.ResponseRecorder {
			return edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, edgetest.InboundForm(ten, from, strings.Repeat("a", 70<<10)))
		}},
		{"not form-encoded", http.StatusBadRequest, func() *httptest.ResponseRecorder {
			req := httptest.NewRequest(http.MethodPost, "/twilio/inbound", strings.NewReader("%zz=%%%"))
			req.Header.Set("X-Twilio-Signature", "x")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec
		}},
	}
	for _, tc := range tests {
		rec := tc.send()
		require.Equal(t, tc.status, rec.Code, tc.name)
	}
	for _, id := range []string{ten.ID, other.ID} {
		msgs, jobsN := counts(t, id)
		require.Zero(t, msgs)
		require.Zero(t, jobsN)
	}
}

func TestInboundOddBodiesNeverFail(t *testing.T) {
	t.Parallel()
	h := edge(t, 0)
	ten := testdb.NewTenant(t, testdb.Pool(t), 5)
	bodies := []string{
		"'; DROP TABLE messages; --",
		"nul\x00byte",
		"bad utf8 \xff\xfe",
		"\x01\x02\x1b[31mcontrol",
		strings.Repeat("é", 3000),
		"",
	}
	for _, b := range bodies {
		rec := edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, edgetest.InboundForm(ten, "whatsapp:"+testdb.PhoneNumber(), b))
		require.Equal(t, http.StatusOK, rec.Code, "%q", b)
	}
	msgs, _ := counts(t, ten.ID)
	require.Equal(t, len(bodies), msgs)
}

func TestInboundStopOptsOutWithoutTurn(t *testing.T) {
	t.Parallel()
	h := edge(t, 0)
	ten := testdb.NewTenant(t, testdb.Pool(t), 5)
	from := "whatsapp:" + testdb.PhoneNumber()

	require.Equal(t, http.StatusOK, edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, edgetest.InboundForm(ten, from, "STOP")).Code)
	require.Equal(t, http.StatusOK, edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, edgetest.InboundForm(ten, from, "are you there?")).Code)
	msgs, jobsN := counts(t, ten.ID)
	require.Equal(t, 2, msgs)
	require.Zero(t, jobsN, "an opted-out contact gets no turn")

	require.Equal(t, http.StatusOK, edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, edgetest.InboundForm(ten, from, "start")).Code)
	require.Equal(t, http.StatusOK, edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, edgetest.InboundForm(ten, from, "hi again")).Code)
	_, jobsN = counts(t, ten.ID)
	require.Equal(t, 1, jobsN, "START turns answers back on")
}

func TestInboundDatabaseDownIs503(t *testing.T) {
	t.Parallel()
	ten := testdb.NewTenant(t, testdb.Pool(t), 5)
	pool := testdb.NewPool(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	require.NoError(t, err)
	h := webhook.NewHandler(webhook.Deps{
		DB: pool, River: rc, Sealer: testdb.Sealer(t),
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		PublicBaseURL: edgetest.BaseURL,
	})
	pool.Close() // the database is gone for this handler
	rec := edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, edgetest.InboundForm(ten, "whatsapp:"+testdb.PhoneNumber(), "hi"))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)

	req := httptest.NewRequest(http.MethodGet, "/readyz", nil)
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	require.Equal(t, http.StatusServiceUnavailable, rr.Code)
}

func TestInboundChannelCacheFollowsTokenRotationAndMovedNumbers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t)
	h := edge(t, 0)
	ten := testdb.NewTenant(t, pool, 5)
	from := "whatsapp:" + testdb.PhoneNumber()
	// Warm the cache with the first token.
	require.Equal(t, http.StatusOK, edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, edgetest.InboundForm(ten, from, "one")).Code)

	// The auth token is rotated: the new one is accepted at once.
	rotated := "tok" + testdb.Unique() + testdb.Unique()
	sealed, err := testdb.Sealer(t).Seal(rotated)
	require.NoError(t, err)
	_, err = store.AddAccount(ctx, pool, ten.ID, ten.AccountSID, sealed, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, edgetest.Post(t, h, "/twilio/inbound", rotated, edgetest.InboundForm(ten, from, "two")).Code)

	// The number moves to a second account of the tenant: that account's
	// webhooks are accepted at once, and the first account's are refused.
	second := "AC" + testdb.Unique() + testdb.Unique()
	secondToken := "tok" + testdb.Unique()
	sealed, err = testdb.Sealer(t).Seal(secondToken)
	require.NoError(t, err)
	_, err = store.AddAccount(ctx, pool, ten.ID, second, sealed, []string{ten.WhatsApp})
	require.NoError(t, err)
	moved := ten
	moved.AccountSID = second
	require.Equal(t, http.StatusOK, edgetest.Post(t, h, "/twilio/inbound", secondToken, edgetest.InboundForm(moved, from, "three")).Code)
	require.Equal(t, http.StatusForbidden, edgetest.Post(t, h, "/twilio/inbound", rotated, edgetest.InboundForm(ten, from, "four")).Code)

	msgs, _ := counts(t, ten.ID)
	require.Equal(t, 3, msgs)
}
