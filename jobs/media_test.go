package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/conversa/conversa/jobs/jobargs"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/fakellm"
	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/media"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/store"
)

// mediaEnv is a turn environment whose tenant's media is served by a fake
// Twilio and whose voice notes go to the fake transcription server.
type mediaEnv struct {
	*turnEnv
	twilio *faketwilio.Fake
	stt    *fakellm.Transcriber
}

type mediaOpts struct {
	noTranscriber bool
	maxBytes      int64
	fetchTimeout  time.Duration
}

func newMediaEnv(t *testing.T, o mediaOpts) *mediaEnv {
	t.Helper()
	tw := faketwilio.New(faketwilio.Options{})
	twURL, err := tw.Start()
	require.NoError(t, err)
	t.Cleanup(tw.Close)
	stt := fakellm.NewTranscriber(0)
	sttSrv := httptest.NewServer(stt)
	t.Cleanup(sttSrv.Close)
	fetcher, err := media.NewFetcher(media.Config{TwilioAPIURL: twURL, AllowPrivate: true, MaxBytes: o.maxBytes, Timeout: o.fetchTimeout})
	require.NoError(t, err)
	m := jobs.Media{Fetcher: fetcher}
	if !o.noTranscriber {
		tr, err := agents.NewOpenAITranscriber(agents.TranscriberConfig{BaseURL: sttSrv.URL + "/v1", APIKey: "sk-test", Model: "whisper-1"})
		require.NoError(t, err)
		m.Transcriber = tr
	}
	e := newTurnEnv(t, 10, func(d *jobs.Deps) {
		d.Media = m
		d.Sealer = testdb.Sealer(t)
	})
	tw.AddAccount(e.ten.AccountSID, e.ten.AuthToken)
	return &mediaEnv{turnEnv: e, twilio: tw, stt: stt}
}

// voice stores an inbound message with attachments, as the webhook would.
func (e *mediaEnv) withMedia(body string, list ...store.Media) store.InboundResult {
	e.t.Helper()
	res, err := store.InsertInbound(e.ctx, e.tx, store.Inbound{
		TenantID: e.ten.ID, ChannelID: e.ch.ID, From: e.from, MessageSID: "SM" + testdb.Unique() + testdb.Unique(),
		Body: body, Media: list,
	})
	require.NoError(e.t, err)
	return res
}

func (e *mediaEnv) serve(contentType string, body string) store.Media {
	return store.Media{URL: e.twilio.AddMedia(e.ten.AccountSID, faketwilio.MediaItem{ContentType: contentType, Body: []byte(body)}), ContentType: contentType}
}

const opus = "audio/ogg; codecs=opus"

func TestVoiceNoteIsTranscribedBeforeTheAgentRunsAndOnce(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, mediaOpts{})
	in := e.withMedia("", e.serve(opus, "What are your opening hours?"))

	// The first attempt fails after the agent answered; the retry reuses
	// the stored transcript.
	e.worker.SetBeforeCommit(func(context.Context, pgx.Tx) error { return errors.New("connection lost") })
	_, err := e.tw.Work(e.ctx, t, e.tx, jobargs.ReplyArgs{TenantID: e.ten.ID, ConversationID: in.ConversationID, MessageID: in.MessageID}, nil)
	require.ErrorContains(t, err, "connection lost")
	e.worker.SetBeforeCommit(nil)
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)

	require.EqualValues(t, 1, e.stt.Calls(), "transcribed once, though the turn ran twice")
	calls := e.llm.calls()
	require.Len(t, calls, 2)
	for _, c := range calls {
		require.Equal(t, []string{"What are your opening hours?"}, c.Pending, "the agent reads the transcript")
	}
	replies := e.replies()
	require.Len(t, replies, 1)
	require.Contains(t, replies[0], "Monday to Friday", "answered as if typed")

	msg, err := store.GetMessage(e.ctx, e.tx, e.ten.ID, in.MessageID)
	require.NoError(t, err)
	require.NotNil(t, msg.Transcript)
	require.Equal(t, "What are your opening hours?", *msg.Transcript)
	b, err := json.Marshal(msg)
	require.NoError(t, err)
	require.Contains(t, string(b), `"transcript":"What are your opening hours?"`)
	require.Len(t, msg.Media, 1, "the media URL stays")

	ev := e.events(in.MessageID)
	tr := ev["media.transcribed"]
	require.Equal(t, "whisper-1", tr["model"])
	require.Contains(t, tr, "duration_s")
	require.Contains(t, tr, "latency_ms")
	require.Equal(t, 1, e.count(`SELECT count(*) FROM message_events WHERE message_id = $1 AND kind = 'media.transcribed'`, in.MessageID))
	require.Zero(t, e.count(`SELECT count(*) FROM message_events WHERE message_id = $1 AND detail::text LIKE '%opening hours%'`, in.MessageID),
		"the trace never holds the words")

	// Memory keeps the words for later turns.
	next := e.inbound("and on Sunday?")
	require.Equal(t, river.EventKindJobCompleted, e.work(next).EventKind)
	last := e.llm.calls()[2]
	require.Equal(t, "What are your opening hours?", last.History[0].Text)
}

func TestVoiceNoteBurstIsTranscribedConcurrentlyAndReadInOrder(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, mediaOpts{})
	e.stt.SetLatency(300 * time.Millisecond)
	words := []string{"first note", "second note", "third note", "fourth note", "fifth note"}
	var last store.InboundResult
	for _, w := range words {
		last = e.withMedia("", e.serve(opus, w))
	}
	require.Equal(t, river.EventKindJobCompleted, e.work(last).EventKind)
	calls := e.llm.calls()
	require.Len(t, calls, 1)
	require.Equal(t, words, calls[0].Pending, "in the order they were sent")
	require.EqualValues(t, 5, e.stt.Calls())
	require.Greater(t, e.stt.MaxInFlight(), int64(1), "transcribed concurrently")
}

func TestMediaFailuresNeverStopTheTurn(t *testing.T) {
	t.Parallel()
	type setup func(e *mediaEnv) store.Media
	for name, c := range map[string]struct {
		opts  mediaOpts
		media setup
		class media.Class
	}{
		"not found": {media: func(e *mediaEnv) store.Media {
			return store.Media{URL: e.twilio.URL() + "/2010-04-01/Accounts/" + e.ten.AccountSID + "/Messages/MM1/Media/MEgone", ContentType: opus}
		}, class: media.ClassNotFound},
		"credentials refused": {media: func(e *mediaEnv) store.Media {
			return store.Media{URL: e.twilio.AddMedia("ACsomeoneelse", faketwilio.MediaItem{ContentType: opus, Body: []byte("x")}), ContentType: opus}
		}, class: media.ClassUnauthorized},
		"too large": {opts: mediaOpts{maxBytes: 100}, media: func(e *mediaEnv) store.Media {
			return store.Media{URL: e.twilio.AddMedia(e.ten.AccountSID, faketwilio.MediaItem{ContentType: opus, Size: 1 << 20}), ContentType: opus}
		}, class: media.ClassTooLarge},
		"timeout": {opts: mediaOpts{fetchTimeout: 200 * time.Millisecond}, media: func(e *mediaEnv) store.Media {
			return store.Media{URL: e.twilio.AddMedia(e.ten.AccountSID, faketwilio.MediaItem{ContentType: opus, Body: []byte("x"), Delay: 5 * time.Second}), ContentType: opus}
		}, class: media.ClassTimeout},
		"transcription error": {media: func(e *mediaEnv) store.Media {
			e.stt.FailNext(1, http.StatusInternalServerError)
			return e.serve(opus, "hello")
		}, class: media.ClassTranscription},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newMediaEnv(t, c.opts)
			in := e.withMedia("", c.media(e))
			require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
			calls := e.llm.calls()
			require.Len(t, calls, 1)
			require.Equal(t, []string{agents.TextVoiceNoteFailed}, calls[0].Pending)
			require.Len(t, e.replies(), 1, "the turn went on and answered")
			require.Equal(t, string(c.class), e.events(in.MessageID)["media.failed"]["class"])
			msg, err := store.GetMessage(e.ctx, e.tx, e.ten.ID, in.MessageID)
			require.NoError(t, err)
			require.Nil(t, msg.Transcript)
		})
	}
}

func TestVoiceNoteWithoutTranscriberReadsAsVoiceNote(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, mediaOpts{noTranscriber: true})
	in := e.withMedia("", e.serve(opus, "hello"))
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	require.Equal(t, []string{agents.TextVoiceNote}, e.llm.calls()[0].Pending)
	require.Len(t, e.replies(), 1)
	fetched := e.events(in.MessageID)["media.fetched"]
	require.EqualValues(t, 5, fetched["bytes"])
	require.Zero(t, e.stt.Calls())
}

func TestImagesReachAVisionAgentAsImageParts(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, mediaOpts{})
	yes := true
	_, _, err := store.PutAgent(e.ctx, e.tx, e.ten.ID, store.Agent{Name: "seer", Vision: true}, &yes)
	require.NoError(t, err)
	in := e.withMedia("my parcel arrived like this", e.serve("image/png", "PNGDATA"), e.serve("application/pdf", "%PDF"))
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	c := e.llm.calls()[0]
	require.Equal(t, []string{"my parcel arrived like this\n[image]\n[attachment: application/pdf]"}, c.Pending)
	require.Equal(t, []string{"data:image/png;base64,UE5HREFUQQ=="}, c.Images)
	require.Equal(t, true, e.events(in.MessageID)["media.fetched"]["image_part"])
}

func TestImagesWithoutVisionAreNotFetched(t *testing.T) {
	t.Parallel()
	e := newMediaEnv(t, mediaOpts{})
	in := e.withMedia("", e.serve("image/jpeg", "JPEG"))
	require.Equal(t, river.EventKindJobCompleted, e.work(in).EventKind)
	c := e.llm.calls()[0]
	require.Equal(t, []string{agents.TextImage}, c.Pending)
	require.Empty(t, c.Images)
	require.Zero(t, e.twilio.MediaFetches())
}
