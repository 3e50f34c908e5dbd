package hook_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twilio/signature"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

// sentMessage is an outbound message Twilio accepted, as the sender leaves it.
type sentMessage struct {
	ten       testdb.Tenant
	id        int64
	sid       string
	contact   string
	contactID int64
}

// newSentMessage writes an outbound SMS reply (one credit reserved) and, with
// withSID, records its Twilio SID as an accepted send would.
func newSentMessage(t *testing.T, withSID bool) sentMessage {
	t.Helper()
	ctx := context.Background()
	pool := testdb.Pool(t)
	ten := testdb.NewTenant(t, pool, 5)
	ch, err := store.ChannelByAddress(ctx, pool, ten.SMS)
	require.NoError(t, err)
	contact := testdb.PhoneNumber()
	in, err := store.InsertInbound(ctx, pool, store.Inbound{
		TenantID: ten.ID, ChannelID: ch.ID, From: contact, MessageSID: "SM" + testdb.Unique() + testdb.Unique(), Body: "hi",
	})
	require.NoError(t, err)
	id, err := store.InsertOutbound(ctx, pool, store.Outbound{
		TenantID: ten.ID, ConversationID: in.ConversationID, Author: "bot", Body: "hello", CreditsReserved: 1,
	})
	require.NoError(t, err)
	m := sentMessage{ten: ten, id: id, sid: "SM" + testdb.Unique() + testdb.Unique(), contact: contact, contactID: in.ContactID}
	claimed, err := store.ClaimSend(ctx, pool, ten.ID, id, 1)
	require.NoError(t, err)
	require.True(t, claimed)
	if withSID {
		_, err := store.MarkSent(ctx, pool, ten.ID, id, m.sid, store.StatusQueued, "create")
		require.NoError(t, err)
	}
	return m
}

func (m sentMessage) path() string { return "/twilio/status?m=" + strconv.FormatInt(m.id, 10) }

func (m sentMessage) form(status string) url.Values {
	return url.Values{
		"MessageSid":    {m.sid},
		"SmsSid":        {m.sid},
		"MessageStatus": {status},
		"SmsStatus":     {status},
		"AccountSid":    {m.ten.AccountSID},
		"From":          {m.ten.SMS},
		"To":            {m.contact},
		"ApiVersion":    {"2010-04-01"},
	}
}

// state is what a status callback can change.
type state struct {
	Status    store.MessageStatus
	SID       *string
	ErrorCode *string
	Events    int
	Callbacks int
	Credits   int64
	OptedOut  bool
}

func (m sentMessage) state(t *testing.T) state {
	t.Helper()
	var s state
	require.NoError(t, testdb.Pool(t).QueryRow(context.Background(), `
		SELECT m.status, m.twilio_sid, m.error_code,
		       (SELECT count(*) FROM message_events e WHERE e.message_id = m.id),
		       (SELECT count(*) FROM status_callbacks c WHERE c.message_sid = $2),
		       (SELECT sum(credits) FROM credit_stripes WHERE tenant_id = m.tenant_id)::bigint,
		       (SELECT opted_out FROM contacts WHERE id = $3)
		FROM messages m WHERE m.id = $1`, m.id, m.sid, m.contactID).
		Scan(&s.Status, &s.SID, &s.ErrorCode, &s.Events, &s.Callbacks, &s.Credits, &s.OptedOut))
	return s
}

func TestStatusOutOfOrderEndsDelivered(t *testing.T) {
	t.Parallel()
	h := edge(t, 0)
	m := newSentMessage(t, true)
	for _, st := range []string{"delivered", "sent", "queued"} {
		rec := edgetest.Post(t, h, m.path(), m.ten.AuthToken, m.form(st))
		require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
	}
	s := m.state(t)
	require.Equal(t, store.StatusDelivered, s.Status, "a late sent never overwrites delivered")
	require.Equal(t, 3, s.Callbacks)

	// Forward moves still apply: read after delivered.
	require.Equal(t, http.StatusNoContent, edgetest.Post(t, h, m.path(), m.ten.AuthToken, m.form("read")).Code)
	require.Equal(t, store.StatusRead, m.state(t).Status)
}

func TestStatusDuplicateCallbackIsANoOp(t *testing.T) {
	t.Parallel()
	h := edge(t, 0)
	m := newSentMessage(t, true)
	require.Equal(t, http.StatusNoContent, edgetest.Post(t, h, m.path(), m.ten.AuthToken, m.form("sent")).Code)
	before := m.state(t)
	require.Equal(t, store.StatusSent, before.Status)
	require.Equal(t, http.StatusNoContent, edgetest.Post(t, h, m.path(), m.ten.AuthToken, m.form("sent")).Code)
	require.Equal(t, before, m.state(t), "nothing written, not even a trace event")
}

func TestStatusFailureRefundsOnceAndOptsOut(t *testing.T) {
	t.Parallel()
	h := edge(t, 0)
	m := newSentMessage(t, true)
	before := m.state(t)
	form := m.form("undelivered")
	form.Set("ErrorCode", "21610")
	require.Equal(t, http.StatusNoContent, edgetest.Post(t, h, m.path(), m.ten.AuthToken, form).Code)
	form = m.form("failed")
	form.Set("ErrorCode", "21610")
	require.Equal(t, http.StatusNoContent, edgetest.Post(t, h, m.path(), m.ten.AuthToken, form).Code)
	require.Equal(t, http.StatusNoContent, edgetest.Post(t, h, m.path(), m.ten.AuthToken, m.form("delivered")).Code)

	s := m.state(t)
	require.Equal(t, store.StatusUndelivered, s.Status, "terminal")
	require.Equal(t, "21610", *s.ErrorCode)
	require.Equal(t, before.Credits+1, s.Credits, "refunded once")
	require.True(t, s.OptedOut)
}

func TestStatusRecordsTheSIDOfASendWhoseAnswerWasLost(t *testing.T) {
	t.Parallel()
	h := edge(t, 0)
	m := newSentMessage(t, false)
	require.Nil(t, m.state(t).SID)
	require.Equal(t, http.StatusNoContent, edgetest.Post(t, h, m.path(), m.ten.AuthToken, m.form("sent")).Code)
	s := m.state(t)
	require.Equal(t, m.sid, *s.SID, "the next send attempt finds the SID and sends nothing")
	require.Equal(t, store.StatusSent, s.Status)
}

func TestStatusBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	h := edge(t, 0)
	m := newSentMessage(t, true)
	other := newSentMessage(t, true)
	before := m.state(t)

	tests := []struct {
		name   string
		status int
		path   string
		token  string
		form   func() url.Values
	}{
		{"bad signature", http.StatusForbidden, m.path(), "not-the-token", func() url.Values { return m.form("delivered") }},
		{"another account's token", http.StatusForbidden, m.path(), other.ten.AuthToken, func() url.Values { return m.form("delivered") }},
		{"another account's AccountSid", http.StatusForbidden, m.path(), m.ten.AuthToken, func() url.Values {
			f := m.form("delivered")
			f.Set("AccountSid", other.ten.AccountSID)
			return f
		}},
		{"From is not the message's number", http.StatusForbidden, m.path(), m.ten.AuthToken, func() url.Values {
			f := m.form("delivered")
			f.Set("From", other.ten.SMS)
			return f
		}},
		{"unknown message", http.StatusForbidden, "/twilio/status?m=999999999", m.ten.AuthToken, func() url.Values { return m.form("delivered") }},
		{"missing MessageSid", http.StatusBadRequest, m.path(), m.ten.AuthToken, func() url.Values {
			f := m.form("delivered")
			f.Del("MessageSid")
			return f
		}},
		{"missing MessageStatus", http.StatusBadRequest, m.path(), m.ten.AuthToken, func() url.Values {
			f := m.form("delivered")
			f.Del("MessageStatus")
			return f
		}},
		{"odd status", http.StatusBadRequest, m.path(), m.ten.AuthToken, func() url.Values { return m.form("de'livered") }},
		{"bad m", http.StatusBadRequest, "/twilio/status?m=abc", m.ten.AuthToken, func() url.Values { return m.form("delivered") }},
		{"bad ErrorCode", http.StatusBadRequest, m.path(), m.ten.AuthToken, func() url.Values {
			f := m.form("failed")
			f.Set("ErrorCode", "x1")
			return f
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := edgetest.Post(t, h, tc.path, tc.token, tc.form())
			require.Equal(t, tc.status, rec.Code, rec.Body.String())
		})
	}
	require.Equal(t, before, m.state(t))
}

// TestStatusIsAppliedWhileTheEdgePoolIsExhausted: a status callback draws
// on a pool of its own (StatusDB), so it is applied while every connection
// of the edge's pool is taken (by a crowd of inbound webhooks, say). Twilio
// tries a callback once and waits 15 s: one that queued for the edge's pool
// until then would be lost.
func TestStatusIsAppliedWhileTheEdgePoolIsExhausted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	newPool := func() *pgxpool.Pool {
		cfg, err := pgxpool.ParseConfig(testdb.URL(t))
		require.NoError(t, err)
		cfg.MaxConns = 1
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(p.Close)
		return p
	}
	edgePool, statusPool := newPool(), newPool()
	busy, err := edgePool.Acquire(ctx)
	require.NoError(t, err)
	defer busy.Release()
	h := webhook.NewHandler(webhook.Deps{
		DB:            edgePool,
		StatusDB:      statusPool,
		River:         nopInserter{},
		Sealer:        testdb.Sealer(t),
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		PublicBaseURL: edgetest.BaseURL,
	})

	m := newSentMessage(t, true)
	form := m.form("delivered")
	// Twilio's patience, not a speed assertion: the request's context ends
	// when Twilio would give up on the callback.
	twilioWait, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req := httptest.NewRequestWithContext(twilioWait, http.MethodPost, m.path(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", signature.Sign(m.ten.AuthToken, edgetest.BaseURL+m.path(), form))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
	require.Equal(t, store.StatusDelivered, m.state(t).Status)
}

// TestStatusLookupCacheChecksAgain: a status callback's message is cached
// after its first callback, and the cache never lets through what the
// database would refuse: a bad signature is still refused, a rotated auth
// token is accepted at once, and a message erased meanwhile is unknown.
func TestStatusLookupCacheChecksAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t)
	h := edge(t, 0)
	m := newSentMessage(t, true)
	require.Equal(t, http.StatusNoContent, edgetest.Post(t, h, m.path(), m.ten.AuthToken, m.form("sent")).Code)

	before := m.state(t)
	require.Equal(t, http.StatusForbidden, edgetest.Post(t, h, m.path(), "not-the-token", m.form("delivered")).Code)
	f := m.form("delivered")
	f.Set("From", testdb.PhoneNumber())
	require.Equal(t, http.StatusForbidden, edgetest.Post(t, h, m.path(), m.ten.AuthToken, f).Code)
	require.Equal(t, before, m.state(t))

	rotated := "tok" + testdb.Unique() + testdb.Unique()
	sealed, err := testdb.Sealer(t).Seal(rotated)
	require.NoError(t, err)
	_, err = store.AddAccount(ctx, pool, m.ten.ID, m.ten.AccountSID, sealed, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, edgetest.Post(t, h, m.path(), rotated, m.form("delivered")).Code)
	require.Equal(t, store.StatusDelivered, m.state(t).Status)
	require.Equal(t, http.StatusForbidden, edgetest.Post(t, h, m.path(), m.ten.AuthToken, m.form("read")).Code, "the old token, once the new one is known")

	// Erased (its conversation deleted) while cached with the new token.
	_, err = pool.Exec(ctx, `DELETE FROM messages WHERE id = $1`, m.id)
	require.NoError(t, err)
	rec := edgetest.Post(t, h, m.path(), rotated, m.form("read"))
	require.Equal(t, http.StatusForbidden, rec.Code, rec.Body.String())
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM message_events WHERE message_id = $1`, m.id).Scan(&n))
	require.Zero(t, n)
}
