package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/webhook/api"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

type broadcastAnswer struct {
	ID              int64    `json:"id"`
	Recipients      int      `json:"recipients"`
	Queued          int      `json:"queued"`
	SkippedOptedOut int      `json:"skipped_opted_out"`
	Invalid         []string `json:"invalid"`
}

type broadcastView struct {
	ID         int64          `json:"id"`
	Name       string         `json:"name"`
	Recipients int            `json:"recipients"`
	Queued     int            `json:"queued"`
	Counts     map[string]int `json:"counts"`
	FinishedAt *string        `json:"finished_at"`
	QueuedAt   *string        `json:"queued_at"`
}

// tenantRows counts what a broadcast writes for a tenant: broadcasts,
// contacts, conversations, messages, and River jobs naming the tenant.
func tenantRows(t *testing.T, tenantID string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, table := range []string{"broadcasts", "contacts", "conversations", "messages"} {
		var n int
		require.NoError(t, testdb.Pool(t).QueryRow(context.Background(),
			`SELECT count(*) FROM `+table+` WHERE tenant_id = $1`, tenantID).Scan(&n))
		out[table] = n
	}
	var n int
	require.NoError(t, testdb.Pool(t).QueryRow(context.Background(),
		`SELECT count(*) FROM river_job WHERE args->>'tenant_id' = $1`, tenantID).Scan(&n))
	out["river_job"] = n
	return out
}

// numbers returns n fresh E.164 numbers.
func numbers(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = testdb.PhoneNumber()
	}
	return out
}

// TestBroadcastRefusals: every bad input is 400 naming its field (or the
// body), and writes nothing: no broadcast, contact, conversation, message
// or job.
func TestBroadcastRefusals(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 0)
	other := testdb.NewTenant(t, testdb.Pool(t), 0)
	path := "/api/v1/tenants/" + ten.ID + "/broadcasts"
	to := `["` + testdb.PhoneNumber() + `"]`
	tooMany := make([]string, api.MaxBroadcastRecipients+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf(`"+1555%07d"`, i)
	}
	cases := []struct {
		name, body, field string
	}{
		{"not json", `{"from": `, "JSON"},
		{"not an object", `["+15551234567"]`, "JSON object"},
		{"trailing data", `{"from": "` + ten.WhatsApp + `", "content_sid": "HX1", "to": ` + to + `} {}`, "one JSON object"},
		{"unknown field", `{"from": "` + ten.WhatsApp + `", "content_sid": "HX1", "to": ` + to + `, "nope": 1}`, "nope"},
		{"field twice", `{"from": "` + ten.WhatsApp + `", "from": "` + ten.SMS + `", "content_sid": "HX1", "to": ` + to + `}`, "from"},
		{"no from", `{"content_sid": "HX1", "to": ` + to + `}`, "from"},
		{"from not a string", `{"from": 5, "content_sid": "HX1", "to": ` + to + `}`, "from"},
		{"unknown from", `{"from": "whatsapp:+15550000001", "content_sid": "HX1", "to": ` + to + `}`, "from"},
		{"another tenant's number", `{"from": "` + other.WhatsApp + `", "content_sid": "HX1", "to": ` + to + `}`, "from"},
		{"no to", `{"from": "` + ten.WhatsApp + `", "content_sid": "HX1"}`, "to"},
		{"empty to", `{"from": "` + ten.WhatsApp + `", "content_sid": "HX1", "to": []}`, "to"},
		{"to not an array", `{"from": "` + ten.WhatsApp + `", "content_sid": "HX1", "to": "+15551234567"}`, "to"},
		{"to of numbers", `{"from": "` + ten.WhatsApp + `", "content_sid": "HX1", "to": [15551234567]}`, "to"},
		{"no valid address", `{"from": "` + ten.WhatsApp + `", "content_sid": "HX1", "to": ["12345", "call me"]}`, "to"},
		{"only WhatsApp addresses, from an SMS number", `{"from": "` + ten.SMS + `", "body": "hi", "to": ["whatsapp:+15551234567"]}`, "to"},
		{"too many", `{"from": "` + ten.WhatsApp + `", "content_sid": "HX1", "to": [` + strings.Join(tooMany, ",") + `]}`, "to"},
		{"both body and content_sid", `{"from": "` + ten.WhatsApp + `", "content_sid": "HX1", "body": "hi", "to": ` + to + `}`, "content_sid"},
		{"neither on WhatsApp", `{"from": "` + ten.WhatsApp + `", "to": ` + to + `}`, "content_sid"},
		{"body on WhatsApp", `{"from": "` + ten.WhatsApp + `", "body": "hi", "to": ` + to + `}`, "content_sid"},
		{"content_sid on SMS", `{"from": "` + ten.SMS + `", "content_sid": "HX1", "to": ` + to + `}`, "content_sid"},
		{"neither on SMS", `{"from": "` + ten.SMS + `", "to": ` + to + `}`, "body"},
		{"SMS body too long", `{"from": "` + ten.SMS + `", "body": "` + strings.Repeat("a", 1601) + `", "to": ` + to + `}`, "body"},
		{"variables without a template", `{"from": "` + ten.SMS + `", "body": "hi", "content_variables": {"1": "x"}, "to": ` + to + `}`, "content_variables"},
		{"variables not strings", `{"from": "` + ten.WhatsApp + `", "content_sid": "HX1", "content_variables": {"1": 2}, "to": ` + to + `}`, "content_variables"},
		{"name not a string", `{"name": [], "from": "` + ten.WhatsApp + `", "content_sid": "HX1", "to": ` + to + `}`, "name"},
	}
	before := tenantRows(t, ten.ID)
	for _, c := range cases {
		rec := o.Do(t, http.MethodPost, path, edgetest.Bearer(ten.APIKey), c.body)
		require.Equal(t, http.StatusBadRequest, rec.Code, "%s: %s", c.name, rec.Body.String())
		var e apiError
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e), c.name)
		require.Equal(t, "invalid_request", e.Error.Code, c.name)
		require.Contains(t, e.Error.Message, c.field, "%s: the message names the field", c.name)
	}
	require.Equal(t, before, tenantRows(t, ten.ID), "nothing was written")

	// Another tenant's path with this tenant's key: 404, nothing written.
	rec := o.Do(t, http.MethodPost, "/api/v1/tenants/"+other.ID+"/broadcasts", edgetest.Bearer(ten.APIKey),
		`{"from": "`+other.WhatsApp+`", "content_sid": "HX1", "to": `+to+`}`)
	require.Equal(t, http.StatusNotFound, rec.Code, rec.Body.String())
	require.Zero(t, tenantRows(t, other.ID)["broadcasts"])
}

// TestBroadcastCreateAndRead: "to" may come before "from"; bare numbers take
// the sender's prefix, and a bare and a prefixed spelling of one number are
// one recipient; invalid addresses are listed and skipped; an opted-out
// contact is skipped and counted. Each queued recipient has one pending
// message with the template's name as its body and one conversa.send job.
// GET is tenant-scoped.
func TestBroadcastCreateAndRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 0)
	other := testdb.NewTenant(t, testdb.Pool(t), 0)
	nums := numbers(5)
	optedOut := testdb.PhoneNumber()
	_, err := testdb.Pool(t).Exec(ctx, `INSERT INTO contacts (tenant_id, address, opted_out, opted_out_at) VALUES ($1, $2, true, now())`,
		ten.ID, "whatsapp:"+optedOut)
	require.NoError(t, err)
	to := append([]string{}, nums...)
	to = append(to, "whatsapp:"+nums[0], nums[1], optedOut, "12345", " not a number ", "12345", "sms:"+nums[2])
	body, err := json.Marshal(map[string]any{"to": to, "name": "reminder", "content_variables": map[string]string{"1": "Friday"},
		"content_sid": "HXreminder", "from": ten.WhatsApp})
	require.NoError(t, err)

	got := call[broadcastAnswer](t, o, http.MethodPost, "/api/v1/tenants/"+ten.ID+"/broadcasts", edgetest.Bearer(ten.APIKey), string(body), http.StatusAccepted)
	require.Equal(t, broadcastAnswer{ID: got.ID, Recipients: 5 + 1 + 3, Queued: 5, SkippedOptedOut: 1,
		Invalid: []string{"12345", "not a number", "sms:" + nums[2]}}, got)

	rows, err := testdb.Pool(t).Query(ctx, `
		SELECT ct.address, m.body, m.status, m.author FROM messages m
		JOIN conversations cv ON cv.id = m.conversation_id JOIN contacts ct ON ct.id = cv.contact_id
		WHERE m.broadcast_id = $1 ORDER BY ct.address`, got.ID)
	require.NoError(t, err)
	type sent struct{ Address, Body, Status, Author string }
	msgs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[sent])
	require.NoError(t, err)
	require.Len(t, msgs, 5)
	for _, m := range msgs {
		require.True(t, strings.HasPrefix(m.Address, "whatsapp:+1555"), m.Address)
		require.Equal(t, sent{m.Address, "[template HXreminder]", "pending", "human"}, m)
	}
	var jobs int
	require.NoError(t, testdb.Pool(t).QueryRow(ctx, `
		SELECT count(*) FROM river_job WHERE kind = 'conversa.send' AND priority = 2
		  AND (args->>'message_id')::bigint IN (SELECT id FROM messages WHERE broadcast_id = $1)`, got.ID).Scan(&jobs))
	require.Equal(t, 5, jobs, "one send job per message, behind replies")
	require.NoError(t, testdb.Pool(t).QueryRow(ctx, `
		SELECT count(*) FROM river_job WHERE kind = 'conversa.broadcast' AND (args->>'broadcast_id')::bigint = $1`, got.ID).Scan(&jobs))
	require.Equal(t, 1, jobs)

	path := fmt.Sprintf("/api/v1/broadcasts/%d", got.ID)
	v := call[broadcastView](t, o, http.MethodGet, path, edgetest.Bearer(ten.APIKey), nil, http.StatusOK)
	require.Equal(t, "reminder", v.Name)
	require.Equal(t, 9, v.Recipients)
	require.Equal(t, 5, v.Queued)
	require.Equal(t, map[string]int{"pending": 5}, v.Counts)
	require.Nil(t, v.FinishedAt)
	require.NotNil(t, v.QueuedAt)
	call[broadcastView](t, o, http.MethodGet, path, edgetest.Bearer(o.Admin), nil, http.StatusOK)
	require.Equal(t, http.StatusNotFound, o.Do(t, http.MethodGet, path, edgetest.Bearer(other.APIKey), nil).Code, "another tenant's broadcast")
	require.Equal(t, http.StatusNotFound, o.Do(t, http.MethodGet, "/api/v1/broadcasts/x", edgetest.Bearer(ten.APIKey), nil).Code)
}

// TestBroadcastIdempotencyKey: a repeat with the key answers the same and
// writes nothing; the key with another body is 409; without a key each
// POST is a broadcast of its own.
func TestBroadcastIdempotencyKey(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 0)
	path := "/api/v1/tenants/" + ten.ID + "/broadcasts"
	auth := edgetest.Bearer(ten.APIKey)
	body := `{"from": "` + ten.SMS + `", "body": "Open on Sunday", "to": ["` + strings.Join(numbers(3), `", "`) + `", "bad"]}`
	k := "bc-" + testdb.Unique()

	a := withKey(t, o, http.MethodPost, path, auth, k, body)
	require.Equal(t, http.StatusAccepted, a.Code, a.Body.String())
	after := tenantRows(t, ten.ID)
	// The sends are due at the SMS number's rate, 1/s: the first now, then
	// one a second, so they do not all wake to snooze for a pacing slot.
	var gaps []float64
	rows, err := testdb.Pool(t).Query(context.Background(), `
		SELECT extract(epoch FROM scheduled_at - lag(scheduled_at) OVER (ORDER BY (args->>'message_id')::bigint))::float8
		FROM river_job WHERE kind = 'conversa.send' AND args->>'tenant_id' = $1`, ten.ID)
	require.NoError(t, err)
	gaps, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (float64, error) {
		var g *float64
		err := r.Scan(&g)
		if g == nil {
			return -1, err
		}
		return *g, err
	})
	require.NoError(t, err)
	require.Len(t, gaps, 3)
	require.InDelta(t, 1, gaps[1], 0.1, "the first two sends are about a second apart")
	require.Equal(t, 1.0, gaps[2], "the second and the third exactly a second apart")
	b := withKey(t, o, http.MethodPost, path, auth, k, body)
	require.Equal(t, http.StatusAccepted, b.Code, b.Body.String())
	require.JSONEq(t, a.Body.String(), b.Body.String(), "the same answer")
	require.Equal(t, "true", b.Header().Get("Idempotent-Replayed"))
	require.Equal(t, after, tenantRows(t, ten.ID), "the repeat wrote nothing")

	c := withKey(t, o, http.MethodPost, path, auth, k, strings.Replace(body, "Sunday", "Monday", 1))
	require.Equal(t, http.StatusConflict, c.Code, c.Body.String())
	require.Contains(t, c.Body.String(), "idempotency_key_reused")
	require.Equal(t, after, tenantRows(t, ten.ID))

	// Without a key, the same body is a new broadcast.
	require.Equal(t, http.StatusAccepted, o.Do(t, http.MethodPost, path, auth, body).Code)
	require.Equal(t, after["broadcasts"]+1, tenantRows(t, ten.ID)["broadcasts"])
	require.Equal(t, after["messages"]+3, tenantRows(t, ten.ID)["messages"])
}

// failingInserter is a River client whose batch inserts fail after the
// first ok ones, as when the process dies half-way through a broadcast.
type failingInserter struct {
	*river.Client[pgx.Tx]
	ok int
}

func (f *failingInserter) InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error) {
	if f.ok == 0 {
		return nil, errors.New("the process died")
	}
	f.ok--
	return f.Client.InsertManyTx(ctx, tx, params)
}

// TestBroadcastBatchesAndResumes: 2,500 recipients in batches of 1,000 are
// three transactions, not one; a creation that fails after its first batch
// has written that batch only, and the same Idempotency-Key completes it
// with exactly one message and one send job per recipient.
func TestBroadcastBatchesAndResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ten := testdb.NewTenant(t, pool, 0)
	input := func(to []string) *api.BroadcastInput {
		in, err := api.NewBroadcastInput()
		require.NoError(t, err)
		t.Cleanup(func() { _ = in.Close() })
		in.From, in.ContentSID = ten.WhatsApp, "HXbatch"
		for _, a := range to {
			require.NoError(t, in.AddTo(a))
		}
		return in
	}
	to := make([]string, 2500)
	for i := range to {
		to[i] = fmt.Sprintf("+1666%07d", i) // distinct: 2,500 random ones could collide
	}
	got, err := api.CreateBroadcast(ctx, pool, rc, ten.ID, input(to), api.BroadcastOptions{BatchSize: 1000})
	require.NoError(t, err)
	require.Equal(t, 2500, got.Queued)
	var txs, msgs int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(DISTINCT xmin::text), count(*) FROM messages WHERE broadcast_id = $1`, got.ID).Scan(&txs, &msgs))
	require.Equal(t, 2500, msgs)
	require.Equal(t, 3, txs, "three batches, three transactions")

	// Half-way: the first batch commits, the second fails.
	key := api.BroadcastOptions{KeyHash: []byte("key-" + testdb.Unique()), RequestHash: []byte("the same request"), BatchSize: 1000}
	ten2 := testdb.NewTenant(t, pool, 0)
	in := input(to)
	in.From = ten2.WhatsApp
	_, err = api.CreateBroadcast(ctx, pool, &failingInserter{Client: rc, ok: 1}, ten2.ID, in, key)
	require.ErrorContains(t, err, "the process died")
	var id int64
	var queued *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT id, queued_at::text FROM broadcasts WHERE tenant_id = $1`, ten2.ID).Scan(&id, &queued))
	require.Nil(t, queued, "not queued yet")
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM messages WHERE broadcast_id = $1`, id).Scan(&msgs))
	require.Equal(t, 1000, msgs, "the first batch is written")

	in = input(to)
	in.From = ten2.WhatsApp
	got, err = api.CreateBroadcast(ctx, pool, rc, ten2.ID, in, key)
	require.NoError(t, err)
	require.Equal(t, id, got.ID, "the same broadcast, resumed")
	require.False(t, got.Replayed)
	require.Equal(t, 2500, got.Queued)
	require.Equal(t, 2500, got.Recipients)
	var contacts, jobs int
	require.NoError(t, pool.QueryRow(ctx, `
		SELECT count(*), count(DISTINCT cv.contact_id) FROM messages m JOIN conversations cv ON cv.id = m.conversation_id
		WHERE m.broadcast_id = $1`, id).Scan(&msgs, &contacts))
	require.Equal(t, 2500, msgs, "one message per recipient")
	require.Equal(t, 2500, contacts)
	require.NoError(t, pool.QueryRow(ctx, `
		SELECT count(*) FROM river_job WHERE kind = 'conversa.send'
		  AND (args->>'message_id')::bigint IN (SELECT id FROM messages WHERE broadcast_id = $1)`, id).Scan(&jobs))
	require.Equal(t, 2500, jobs, "one send job per message")

	// The key's request again: answered, nothing written.
	in = input(to)
	in.From = ten2.WhatsApp
	again, err := api.CreateBroadcast(ctx, pool, rc, ten2.ID, in, key)
	require.NoError(t, err)
	require.True(t, again.Replayed)
	require.Equal(t, got.Queued, again.Queued)
}

// FuzzDecodeBroadcast: whatever the body, decoding a broadcast either
// succeeds or is a 400 with a reason (ErrInvalid), never another error,
// and never a panic.
func FuzzDecodeBroadcast(f *testing.F) {
	for _, seed := range []string{
		`{"to": ["+15551234567"], "from": "whatsapp:+15550001111", "content_sid": "HX1", "content_variables": {"1": "a"}}`,
		`{"to": [`, `{"to": [1]}`, `{"content_variables": []}`, `[]`, `{"a":1}`, `{"to": ["+1"]} x`, `{"to": null}`, `"x"`, ``,
		`{"name": "\ud800", "to": ["whatsapp:+1555\u0000"]}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		in, err := api.DecodeBroadcast(strings.NewReader(body))
		defer in.Close() //nolint:errcheck
		if err != nil && !errors.Is(err, api.ErrInvalid) {
			t.Fatalf("%q: %v is not a refusal", body, err)
		}
	})
}

// TestBroadcastRacingKeyWritesOnce: two requests with one Idempotency-Key
// at the same time make one broadcast, with one message per recipient, and
// both answer it.
func TestBroadcastRacingKeyWritesOnce(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 0)
	to := make([]string, 1500)
	for i := range to {
		to[i] = fmt.Sprintf(`"+1444%07d"`, i)
	}
	body := `{"from": "` + ten.WhatsApp + `", "content_sid": "HXrace", "to": [` + strings.Join(to, ",") + `]}`
	k := "race-" + testdb.Unique()
	answers := make(chan broadcastAnswer, 2)
	for range 2 {
		go func() {
			rec := withKey(t, o, http.MethodPost, "/api/v1/tenants/"+ten.ID+"/broadcasts", edgetest.Bearer(ten.APIKey), k, body)
			var a broadcastAnswer
			if rec.Code != http.StatusAccepted || json.Unmarshal(rec.Body.Bytes(), &a) != nil {
				t.Errorf("%d %s", rec.Code, rec.Body.String())
			}
			answers <- a
		}()
	}
	a, b := <-answers, <-answers
	require.Equal(t, a.ID, b.ID, "one broadcast")
	require.Equal(t, 1500, a.Queued)
	require.Equal(t, 1500, b.Queued)
	rows := tenantRows(t, ten.ID)
	require.Equal(t, 1, rows["broadcasts"])
	require.Equal(t, 1500, rows["messages"])
	require.Equal(t, 1500+1, rows["river_job"], "a send per message and the broadcast's check")
}
