package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/fakellm"
	"github.com/conversa/conversa/internal/faketool"
	"github.com/conversa/conversa/internal/signing"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

// flaky is the offline provider with its nth Reply call (from 1) failing
// with err, once.
type flaky struct {
	agents.Offline
	mu    sync.Mutex
	calls int
	failN int
	err   error
}

func (f *flaky) Reply(ctx context.Context, req agents.Request) (agents.Answer, error) {
	f.mu.Lock()
	f.calls++
	fail := f.calls == f.failN
	f.mu.Unlock()
	if fail {
		return agents.Answer{}, f.err
	}
	return f.Offline.Reply(ctx, req)
}

// toolEnv is a turn env whose agent has one HTTP tool, "book", on a
// recording endpoint; the offline agent calls it when a customer writes
// "book".
type toolEnv struct {
	*turnEnv
	tool *faketool.Server
}

func newToolEnv(t testing.TB, llm agents.Provider, edit func(*jobs.Deps)) *toolEnv {
	t.Helper()
	tool, err := faketool.Start()
	require.NoError(t, err)
	t.Cleanup(tool.Close)
	tool.Respond(func(n int, r faketool.Request) faketool.Response {
		return faketool.Response{ContentType: "application/json", Body: `{"reply": "Booked: Tuesday 10:00.", "slot": "tue-10"}`}
	})
	e := newTurnEnv(t, 10, func(d *jobs.Deps) {
		d.Sealer = testdb.Sealer(t)
		d.Tools = jobs.NewToolHTTP(true) // the endpoint is on loopback
		if llm != nil {
			d.LLM = llm
		}
		if edit != nil {
			edit(d)
		}
	})
	_, _, err = store.PutAgent(e.ctx, e.tx, e.ten.ID, store.Agent{Name: "assistant", HTTPTools: []store.HTTPTool{{
		Name: "book", Description: "Book an appointment", URL: tool.URL() + "/book", Keywords: []string{"book"},
		Parameters: map[string]any{"type": "object", "properties": map[string]any{"message": map[string]any{"type": "string"}}},
	}}}, nil)
	require.NoError(t, err)
	return &toolEnv{turnEnv: e, tool: tool}
}

// try works the turn once and returns the worker's error.
func (e *toolEnv) try(in store.InboundResult) error {
	e.t.Helper()
	_, err := e.tw.Work(e.ctx, e.t, e.tx, jobargs.ReplyArgs{TenantID: e.ten.ID, ConversationID: in.ConversationID, MessageID: in.MessageID}, nil)
	return err
}

// toolEvents returns the details of a message's turn.tool events, in order.
func (e *toolEnv) toolEvents(messageID int64) []map[string]any {
	e.t.Helper()
	rows, err := e.tx.Query(e.ctx, `SELECT detail FROM message_events WHERE message_id = $1 AND kind = 'turn.tool' ORDER BY id`, messageID)
	require.NoError(e.t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[map[string]any])
	require.NoError(e.t, err)
	return out
}

func TestToolCallIsSignedKeyedAndAnswered(t *testing.T) {
	t.Parallel()
	e := newToolEnv(t, nil, nil)
	in := e.inbound("Can I book a cleaning next week?")

	require.NoError(t, e.try(in))
	reqs := e.tool.Requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	require.Equal(t, "/book", r.Path)
	require.Equal(t, "application/json", r.ContentType)
	require.Equal(t, fmt.Sprintf("conversa-%d-1-0", in.MessageID), r.IdempotencyKey)
	require.True(t, signing.Verify(r.Signature, e.ten.SigningSecret, r.Body), "signature %q", r.Signature)
	var args map[string]string
	require.NoError(t, json.Unmarshal(r.Body, &args))
	require.Equal(t, "Can I book a cleaning next week?", args["message"])

	require.Equal(t, []string{"Booked: Tuesday 10:00."}, e.replies())
	ev := e.toolEvents(in.MessageID)
	require.Len(t, ev, 1)
	require.Equal(t, "book", ev[0]["tool"])
	require.Equal(t, "ok", ev[0]["outcome"])
	require.EqualValues(t, 200, ev[0]["status"])
	require.EqualValues(t, 1, ev[0]["attempt"])
	require.Contains(t, ev[0], "latency_ms")
	raw, _ := json.Marshal(ev)
	require.NotContains(t, string(raw), "Tuesday", "a trace event never holds the tool's answer")
	require.NotContains(t, string(raw), "cleaning", "a trace event never holds the arguments")
}

// Every way a turn can be retried after its tool ran: the endpoint is
// called once, and the reply uses the recorded result.
func TestRetriedTurnReusesRecordedToolResult(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		llm   func() agents.Provider
		crash func(w *jobs.ReplyWorker)
	}{
		{name: "llm error after the tool ran", llm: func() agents.Provider {
			return &flaky{failN: 2, err: errors.New("provider said no")}
		}},
		{name: "llm timeout after the tool ran", llm: func() agents.Provider {
			return &flaky{failN: 2, err: fmt.Errorf("openai chat completion: %w", context.DeadlineExceeded)}
		}},
		{name: "crash after the record", crash: func(w *jobs.ReplyWorker) {
			var once sync.Once
			w.SetBeforeCommit(func(ctx context.Context, tx pgx.Tx) error {
				err := error(nil)
				once.Do(func() { err = errors.New("process killed") })
				return err
			})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var llm agents.Provider
			if c.llm != nil {
				llm = c.llm()
			}
			e := newToolEnv(t, llm, nil)
			if c.crash != nil {
				c.crash(e.worker)
			}
			in := e.inbound("I'd like to book, please")

			require.Error(t, e.try(in), "the first attempt fails after the tool ran")
			require.Len(t, e.tool.Requests(), 1)
			require.Empty(t, e.replies())

			require.NoError(t, e.try(in))
			require.Len(t, e.tool.Requests(), 1, "the retried turn did not call the endpoint again")
			require.Equal(t, []string{"Booked: Tuesday 10:00."}, e.replies())
			ev := e.toolEvents(in.MessageID)
			require.Len(t, ev, 2)
			require.Equal(t, "ok", ev[0]["outcome"])
			require.Equal(t, true, ev[1]["reused"])
		})
	}
}

// Only a crash between the POST and its record repeats the call: with the
// same body and the same Idempotency-Key.
func TestCrashBetweenCallAndRecordRepeatsWithSameKey(t *testing.T) {
	t.Parallel()
	e := newToolEnv(t, nil, nil)
	var once sync.Once
	e.worker.SetAfterToolCall(func(ctx context.Context, c store.ToolCall) error {
		err := error(nil)
		once.Do(func() { err = errors.New("process killed") })
		return err
	})
	in := e.inbound("book me in")

	require.Error(t, e.try(in))
	require.NoError(t, e.try(in))
	reqs := e.tool.Requests()
	require.Len(t, reqs, 2)
	require.Equal(t, reqs[0].IdempotencyKey, reqs[1].IdempotencyKey)
	require.Equal(t, reqs[0].Body, reqs[1].Body)
	require.Equal(t, []string{"Booked: Tuesday 10:00."}, e.replies())
	require.Equal(t, 2, e.count(`SELECT attempts FROM tool_calls WHERE message_id = $1`, in.MessageID))
	ev := e.toolEvents(in.MessageID)
	require.Len(t, ev, 1)
	require.EqualValues(t, 2, ev[0]["attempt"])
}

// A tool that fails: the model is told, answers anyway, and the trace says so.
func TestFailingToolStillGetsAnAnswer(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		res     faketool.Response
		outcome string
		status  any
	}{
		{"timeout", faketool.Response{Delay: 2 * time.Second, Body: `{}`}, "timeout", nil},
		{"5xx", faketool.Response{Status: 503, ContentType: "application/json", Body: `{"error":"down"}`}, "http_error", float64(503)},
		{"not json", faketool.Response{ContentType: "application/json", Body: `<html>oops</html>`}, "bad_answer", float64(200)},
		{"html", faketool.Response{ContentType: "text/html", Body: `<html>login</html>`}, "bad_answer", float64(200)},
		{"over 16 KiB", faketool.Response{ContentType: "text/plain", Body: strings.Repeat("x", 17<<10)}, "bad_answer", float64(200)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newToolEnv(t, nil, func(d *jobs.Deps) { d.Tools.Timeout = 300 * time.Millisecond })
			e.tool.Respond(func(int, faketool.Request) faketool.Response { return c.res })
			in := e.inbound("book please")

			require.NoError(t, e.try(in))
			require.Equal(t, []string{"Sorry, I could not reach book just now; please try again later."}, e.replies())
			ev := e.toolEvents(in.MessageID)
			require.Len(t, ev, 1)
			require.Equal(t, c.outcome, ev[0]["outcome"])
			require.Equal(t, c.status, ev[0]["status"])
			require.NotEmpty(t, ev[0]["reason"])
		})
	}
}

func TestToolOnPrivateAddressRefusedUnlessAllowed(t *testing.T) {
	t.Parallel()
	e := newToolEnv(t, nil, func(d *jobs.Deps) { d.Tools = jobs.NewToolHTTP(false) })
	in := e.inbound("book")

	require.NoError(t, e.try(in))
	require.Empty(t, e.tool.Requests(), "a loopback endpoint is never called")
	ev := e.toolEvents(in.MessageID)
	require.Len(t, ev, 1)
	require.Equal(t, "refused", ev[0]["outcome"])
}

// The OpenAI path: the model calls the tool, gets its answer, replies
// quoting it; a model that keeps calling is stopped after four rounds.
func TestOpenAIToolRounds(t *testing.T) {
	t.Parallel()
	fake, err := fakellm.Start(fakellm.Options{})
	require.NoError(t, err)
	t.Cleanup(fake.Close)
	fake.ToolCallsOn("appointment", fakellm.ToolCall{Name: "book", Arguments: `{"day":"tuesday"}`})
	fake.ToolRoundsOn("forever", 100, fakellm.ToolCall{Name: "book", Arguments: `{"day":"any"}`})
	p, err := agents.NewOpenAI(agents.OpenAIConfig{BaseURL: fake.URL(), APIKey: "sk-test", Model: "fake-model"})
	require.NoError(t, err)
	e := newToolEnv(t, p, nil)

	in := e.inbound("I need an appointment")
	require.NoError(t, e.try(in))
	reqs := e.tool.Requests()
	require.Len(t, reqs, 1)
	require.JSONEq(t, `{"day":"tuesday"}`, string(reqs[0].Body))
	replies := e.replies()
	require.Len(t, replies, 1)
	require.Contains(t, replies[0], `book said {"reply": "Booked: Tuesday 10:00."`)
	require.EqualValues(t, 2, e.events(in.MessageID)["turn.llm"]["attempts"], "two model calls, one usage")

	in2 := e.inbound("call it forever")
	require.NoError(t, e.try(in2))
	require.Len(t, e.tool.Requests(), 1+agents.MaxToolRounds)
	require.Equal(t, agents.MaxToolRounds, e.count(`SELECT count(*) FROM tool_calls WHERE message_id = $1`, in2.MessageID))
	require.Len(t, e.replies(), 2, "the model answered once its rounds were spent")
}

// The offline agent answers from the knowledge base when no FAQ rule
// matches, and the trace names the passages (never their text).
func TestOfflineAnswersWithBestPassage(t *testing.T) {
	t.Parallel()
	e := newTurnEnv(t, 5, nil)
	_, _, err := store.PutKnowledgeDoc(e.ctx, e.tx, e.ten.ID, "clinic.md", nil,
		"# Parking\n\nFree parking behind the building, entrance on Rua Augusta.\n\n# X-rays\n\nX-rays are done on Tuesdays.")
	require.NoError(t, err)
	in := e.inbound("where can I leave my car? is there parking")

	e.work(in)
	require.Equal(t, []string{"Parking\nFree parking behind the building, entrance on Rua Augusta."}, e.replies())
	ev := e.events(in.MessageID)["turn.knowledge"]
	require.NotNil(t, ev)
	passages := ev["passages"].([]any)
	require.Equal(t, "clinic.md", passages[0].(map[string]any)["doc"])
	raw, _ := json.Marshal(ev)
	require.NotContains(t, string(raw), "Augusta")
}
