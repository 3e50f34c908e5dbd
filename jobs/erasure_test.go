package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/riverqueue/river/rivertest"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/internal/twilio"
	"github.com/conversa/conversa/internal/twilio/signature"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook"
	"github.com/conversa/conversa/webhook/api"
)

// TestErasureCancelsWorkInFlight erases a contact whose turn is queued and
// whose two replies (a bot's, a person's) wait to be sent: what a business
// expects is that nothing more goes out to them. The jobs are cancelled in
// River, the replies are failed with error_reason contact_erased and no
// body, the bot reply's credit is refunded, and a send or turn job that
// runs anyway calls neither Twilio nor the LLM and writes no reply.
func TestErasureCancelsWorkInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t)
	ten := testdb.NewTenant(t, pool, 10)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: logger}) // inserts, works nothing
	require.NoError(t, err)
	admin := "admin-" + testdb.Unique()
	h := webhook.NewHandler(webhook.Deps{DB: pool, River: rc, Sealer: testdb.Sealer(t), Logger: logger,
		PublicBaseURL: "https://conversa.example.com", AdminToken: admin, Redis: testRedis(t), Memory: testMemory(t, testRedis(t))})
	serve := func(method, path, body string, sign url.Values) *httptest.ResponseRecorder {
		var req *http.Request
		if sign != nil {
			req = httptest.NewRequest(method, path, strings.NewReader(sign.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("X-Twilio-Signature", signature.Sign(ten.AuthToken, "https://conversa.example.com"+path, sign))
		} else {
			req = httptest.NewRequest(method, path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+admin)
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	from := "whatsapp:" + testdb.PhoneNumber()
	rec := serve(http.MethodPost, "/twilio/inbound", "", url.Values{
		"MessageSid": {"SM" + testdb.Unique() + testdb.Unique()}, "AccountSid": {ten.AccountSID},
		"From": {from}, "To": {ten.WhatsApp}, "Body": {"where is my order"}, "NumMedia": {"0"},
	})
	require.Equal(t, http.StatusOK, rec.Code)
	var convID, inboundID int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT conversation_id, id FROM messages WHERE tenant_id = $1 AND direction = 'inbound'`, ten.ID).Scan(&convID, &inboundID))

	// A bot reply written and paid for, its send job queued.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	replyTo := inboundID
	botID, err := store.InsertOutbound(ctx, tx, store.Outbound{TenantID: ten.ID, ConversationID: convID, Author: store.AuthorBot,
		Body: "your order ships tomorrow", ReplyToID: &replyTo, CreditsReserved: 1})
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `UPDATE credit_stripes SET credits = credits - 1 WHERE tenant_id = $1 AND stripe = (SELECT min(stripe) FROM credit_stripes WHERE tenant_id = $1 AND credits > 0)`, ten.ID)
	require.NoError(t, err)
	_, err = rc.InsertTx(ctx, tx, jobargs.SendArgs{TenantID: ten.ID, MessageID: botID}, nil)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	// A person's message, through the API.
	rec = serve(http.MethodPost, fmt.Sprintf("/api/v1/conversations/%d/messages", convID), `{"body":"a person will call you"}`, nil)
	require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
	var human store.Message
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &human))
	before, err := store.GetTenant(ctx, pool, ten.ID)
	require.NoError(t, err)

	rec = serve(http.MethodDelete, "/api/v1/tenants/"+ten.ID+"/contacts/"+from, "", nil)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var out struct {
		Erased []api.ContactErasure `json:"erased"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
	require.Len(t, out.Erased, 1)
	require.EqualValues(t, 2, out.Erased[0].Rows["unsent_failed"])
	require.EqualValues(t, 3, out.Erased[0].Rows["river_jobs_cancelled"], "the turn and both sends")

	jobsLeft, err := rc.JobList(ctx, river.NewJobListParams().Where("args->>'tenant_id' = @t", river.NamedArgs{"t": ten.ID}))
	require.NoError(t, err)
	require.Len(t, jobsLeft.Jobs, 3)
	for _, j := range jobsLeft.Jobs {
		require.Equal(t, rivertype.JobStateCancelled, j.State, j.Kind)
	}
	for _, id := range []int64{botID, human.ID} {
		m, err := store.GetMessage(ctx, pool, ten.ID, id)
		require.NoError(t, err)
		require.Equal(t, store.StatusFailed, m.Status)
		require.Equal(t, store.ReasonContactErased, *m.ErrorReason)
		require.Empty(t, m.Body)
	}
	after, err := store.GetTenant(ctx, pool, ten.ID)
	require.NoError(t, err)
	require.Equal(t, before.Credits+1, after.Credits, "the unsent bot reply is refunded")

	// A send or a turn that runs anyway (a worker that had fetched it
	// before the cancel) sends nothing and answers nothing.
	fake := faketwilio.New(faketwilio.Options{NoCallbacks: true})
	apiURL, err := fake.Start()
	require.NoError(t, err)
	t.Cleanup(fake.Close)
	fake.AddAccount(ten.AccountSID, ten.AuthToken)
	tw, err := twilio.New(apiURL, time.Second)
	require.NoError(t, err)
	deps := jobs.Deps{DB: pool, Logger: logger, Sealer: testdb.Sealer(t), Twilio: tw, PublicBaseURL: "http://127.0.0.1:1", Memory: testMemory(t, testRedis(t))}
	wtx, err := pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = wtx.Rollback(ctx) })
	send := rivertest.NewWorker(t, riverpgxv5.New(nil), &river.Config{}, jobs.NewSendWorker(deps))
	res, err := send.Work(ctx, t, wtx, jobargs.SendArgs{TenantID: ten.ID, MessageID: botID}, nil)
	checkWork(t, res, err)
	turn := rivertest.NewWorker(t, riverpgxv5.New(nil), &river.Config{}, jobs.NewReplyWorker(deps))
	res, err = turn.Work(ctx, t, wtx, jobargs.ReplyArgs{TenantID: ten.ID, ConversationID: convID, MessageID: inboundID}, nil)
	checkWork(t, res, err)
	require.Zero(t, fake.Requests(), "Twilio is never called for an erased contact")
	var outbound int
	require.NoError(t, wtx.QueryRow(ctx, `SELECT count(*) FROM messages WHERE conversation_id = $1 AND direction = 'outbound'`, convID).Scan(&outbound))
	require.Equal(t, 2, outbound, "no new reply")
	var skipped string
	require.NoError(t, wtx.QueryRow(ctx, `SELECT detail->>'reason' FROM message_events WHERE message_id = $1 AND kind = 'turn.skipped' ORDER BY id DESC LIMIT 1`, inboundID).Scan(&skipped))
	require.Contains(t, skipped, "closed")
}
