package hook_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
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
