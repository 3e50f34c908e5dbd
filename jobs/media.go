package jobs

import (
	"context"
	"encoding/base64"
	"errors"
	"github.com/conversa/conversa/jobs/jobargs"
	"io"
	"log/slog"
	"mime"
	"strings"
	"sync"
	"time"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/media"
	"github.com/conversa/conversa/store"
)

// DefaultMediaTimeout bounds a turn's media stage (fetches and
// transcriptions); TurnTimeout counts it.
const DefaultMediaTimeout = 12 * time.Second

// Media is how a turn gets its customer's attachments (docs/operations.md,
// "Media"): voice notes fetched and transcribed before the agent runs, images
// fetched for an agent with vision.
type Media struct {
	// Fetcher fetches from Twilio; nil means attachments are never fetched.
	Fetcher *media.Fetcher
	// Transcriber transcribes voice notes; nil means they read "[voice note]"
	// (they are still fetched, so the trace says whether they could be).
	Transcriber agents.Transcriber
	// Timeout bounds the whole media stage of a turn (every attachment of the
	// burst, concurrently). Default 12 s. The turn job's timeout must cover it
	// and the LLM call.
	Timeout time.Duration
}

// Attachment work is bounded: at most mediaParallel fetches in flight per
// turn, and at most maxImagesPerTurn images given to a model (the newest),
// each held in memory as a data URL (at most MEDIA_MAX_BYTES * 4/3).
const (
	mediaParallel    = 4
	maxImagesPerTurn = 4
)

// attachmentStates is, per message id, what became of each attachment.
type attachmentStates map[int64][]agents.AttachmentState

// attachmentResult is one attachment's fate, recorded on its message.
type attachmentResult struct {
	messageID  int64
	index      int
	state      agents.AttachmentState
	transcript string
	imageURL   string
	event      store.Event
}

// credentials opens the account that owns the conversation's number.
func (w *ReplyWorker) credentials(ctx context.Context, a jobargs.ReplyArgs) (sid, token string, err error) {
	acct, err := store.ConversationAccount(ctx, w.db, a.TenantID, a.ConversationID)
	if err != nil {
		return "", "", err
	}
	if w.sealer == nil {
		return "", "", errors.New("media: no sealer to open the account's token")
	}
	token, err = w.sealer.Open(acct.AuthTokenSealed)
	if err != nil {
		return "", "", err
	}
	return acct.AccountSID, token, nil
}

// pendingWith returns the pending messages among stored that have an
// attachment of kind and still need work (a voice note not yet transcribed).
func pendingWith(stored []store.MemoryTurn, pendingIDs []int64, kind media.Kind) []store.MemoryTurn {
	ids := make(map[int64]bool, len(pendingIDs))
	for _, id := range pendingIDs {
		ids[id] = true
	}
	var out []store.MemoryTurn
	for _, m := range stored {
		if !ids[m.ID] || (kind == media.KindAudio && m.Transcript != nil) {
			continue
		}
		for _, md := range m.Media {
			if media.KindOf(md.ContentType) == kind {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

// runAttachments opens every attachment of kind of msgs (the newest limit
// of them when limit > 0) with the account's credentials and runs work on
// it, at most mediaParallel at once, under the media stage's timeout. A
// fetch that fails is media.failed with the attachment left in failState.
// The results are in message and attachment order (a burst reads in the
// order it was sent, however the work finished).
func (w *ReplyWorker) runAttachments(ctx context.Context, a jobargs.ReplyArgs, msgs []store.MemoryTurn, kind media.Kind, limit int,
	failState agents.AttachmentState, work func(ctx context.Context, m store.MemoryTurn, i int, d *media.Download, start time.Time) attachmentResult) []attachmentResult {
	ctx, cancel := context.WithTimeout(ctx, w.media.Timeout)
	defer cancel()
	sid, token, credErr := w.credentials(ctx, a)
	type job struct {
		m  store.MemoryTurn
		i  int
		md store.Media
	}
	var jobs []job
	for _, m := range msgs {
		for i, md := range m.Media {
			if media.KindOf(md.ContentType) == kind {
				jobs = append(jobs, job{m, i, md})
			}
		}
	}
	if limit > 0 && len(jobs) > limit {
		jobs = jobs[len(jobs)-limit:]
	}
	results := make([]attachmentResult, len(jobs))
	sem := make(chan struct{}, mediaParallel)
	var wg sync.WaitGroup
	for n, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if credErr != nil {
				results[n] = failed(j.m, j.i, j.md, "fetch", credErr, failState)
				return
			}
			start := time.Now()
			d, err := w.media.Fetcher.Open(ctx, j.md.URL, sid, token, j.md.ContentType)
			if err != nil {
				results[n] = failed(j.m, j.i, j.md, "fetch", err, failState)
				return
			}
			defer d.Close()
			results[n] = work(ctx, j.m, j.i, d, start)
		}()
	}
	wg.Wait()
	return results
}

// failed is an attachment that did not reach the agent, and its trace event.
func failed(m store.MemoryTurn, i int, md store.Media, stage string, err error, state agents.AttachmentState) attachmentResult {
	return attachmentResult{messageID: m.ID, index: i, state: state, event: store.Event{Kind: "media.failed", Detail: map[string]any{
		"index": i, "content_type": md.ContentType, "stage": stage, "class": media.ClassOf(err),
	}}}
}

// transcribe fetches and transcribes the pending burst's voice notes that
// have no transcript yet, stores each message's transcript (once: a retried
// turn finds it and does nothing), records media.transcribed / media.fetched
// / media.failed on each message at once (so the trace keeps them even if
// the turn fails later), and returns the stored turns with their transcripts
// and what failed. Nothing here fails the turn.
func (w *ReplyWorker) transcribe(ctx context.Context, log *slog.Logger, a jobargs.ReplyArgs, stored []store.MemoryTurn, pendingIDs []int64) ([]store.MemoryTurn, attachmentStates) {
	if w.media.Fetcher == nil {
		return stored, nil
	}
	todo := pendingWith(stored, pendingIDs, media.KindAudio)
	if len(todo) == 0 {
		return stored, nil
	}
	results := w.runAttachments(ctx, a, todo, media.KindAudio, 0, agents.AttachmentFailed, func(ctx context.Context, m store.MemoryTurn, i int, d *media.Download, start time.Time) attachmentResult {
		md := m.Media[i]
		if w.media.Transcriber == nil {
			_, err := io.Copy(io.Discard, d)
			if err != nil {
				return failed(m, i, md, "fetch", err, agents.AttachmentFailed)
			}
			return attachmentResult{messageID: m.ID, index: i, event: store.Event{Kind: "media.fetched", Detail: map[string]any{
				"index": i, "content_type": d.ContentType, "bytes": d.Bytes(),
				"latency_ms": time.Since(start).Milliseconds(), "transcribed": false, "reason": "no transcription model",
			}}}
		}
		tr, err := w.media.Transcriber.Transcribe(ctx, d, d.ContentType)
		if err != nil {
			// A read error of the download (too large, Twilio's timeout) is the
			// fetch's fault, whatever the transcription server made of it.
			stage, class := "transcribe", media.ClassTranscription
			if c := media.ClassOf(err); c == media.ClassTooLarge || c == media.ClassTimeout {
				class = c
			}
			var me *media.Error
			if errors.As(err, &me) || errors.Is(err, media.ErrTooLarge) {
				stage = "fetch"
			}
			return failed(m, i, md, stage, &media.Error{Class: class, Err: err}, agents.AttachmentFailed)
		}
		if tr.Text == "" {
			return failed(m, i, md, "transcribe", &media.Error{Class: media.ClassEmpty}, agents.AttachmentFailed)
		}
		return attachmentResult{messageID: m.ID, index: i, transcript: tr.Text, event: store.Event{Kind: "media.transcribed", Detail: map[string]any{
			"index": i, "content_type": d.ContentType, "bytes": d.Bytes(), "model": tr.Model,
			"duration_s": tr.Seconds, "latency_ms": tr.Latency.Milliseconds(), "fetch_and_transcribe_ms": time.Since(start).Milliseconds(),
		}}}
	})

	// Per message: its events, its failures, and its transcript when every
	// voice note of it was transcribed.
	states := attachmentStates{}
	byMsg := map[int64][]attachmentResult{}
	for _, r := range results {
		byMsg[r.messageID] = append(byMsg[r.messageID], r)
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer rcancel()
	stored = append([]store.MemoryTurn(nil), stored...)
	changed := false
	for k := range stored {
		m := &stored[k]
		rs, ok := byMsg[m.ID]
		if !ok {
			continue
		}
		var texts []string
		var events []store.Event
		complete := w.media.Transcriber != nil
		st := make([]agents.AttachmentState, len(m.Media))
		for _, r := range rs {
			events = append(events, r.event)
			st[r.index] = r.state
			if r.state == agents.AttachmentFailed {
				complete = false
			}
			texts = append(texts, r.transcript)
		}
		states[m.ID] = st
		if complete {
			t := strings.Join(texts, "\n")
			if kept, err := store.SetTranscript(rctx, w.db, a.TenantID, m.ID, t); err != nil {
				// The agent still reads it; a later turn transcribes again.
				log.Warn("store transcript failed", "message_id", m.ID, "error", err.Error())
			} else if kept {
				changed = true
			}
			m.Transcript = &t
		}
		if err := store.AddEvents(rctx, w.db, a.TenantID, m.ID, events...); err != nil {
			log.Warn("record media events failed", "message_id", m.ID, "error", err.Error())
		}
	}
	if changed {
		// A cached copy of these turns (if the cache already took them) lacks
		// the transcript: drop it, the next read rebuilds it from Postgres.
		w.memory.Forget(rctx, a.TenantID, a.ConversationID)
	}
	return stored, states
}

// images fetches the pending burst's images for an agent with vision, as
// data URLs in message order (the newest maxImagesPerTurn). A failed image
// reads "[image]" like any other and is recorded as media.failed.
func (w *ReplyWorker) images(ctx context.Context, log *slog.Logger, a jobargs.ReplyArgs, stored []store.MemoryTurn, pendingIDs []int64) []string {
	if w.media.Fetcher == nil {
		return nil
	}
	todo := pendingWith(stored, pendingIDs, media.KindImage)
	if len(todo) == 0 {
		return nil
	}
	results := w.runAttachments(ctx, a, todo, media.KindImage, maxImagesPerTurn, agents.AttachmentPlain, func(ctx context.Context, m store.MemoryTurn, i int, d *media.Download, start time.Time) attachmentResult {
		u, err := dataURL(d, w.media.Fetcher.MaxBytes())
		if err != nil {
			return failed(m, i, m.Media[i], "fetch", err, agents.AttachmentPlain)
		}
		return attachmentResult{messageID: m.ID, index: i, state: agents.AttachmentImagePart, imageURL: u, event: store.Event{Kind: "media.fetched", Detail: map[string]any{
			"index": i, "content_type": d.ContentType, "bytes": d.Bytes(), "latency_ms": time.Since(start).Milliseconds(), "image_part": true,
		}}}
	})
	var urls []string
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer rcancel()
	for _, r := range results {
		if r.imageURL != "" {
			urls = append(urls, r.imageURL)
		}
		if err := store.AddEvents(rctx, w.db, a.TenantID, r.messageID, r.event); err != nil {
			log.Warn("record media events failed", "message_id", r.messageID, "error", err.Error())
		}
	}
	return urls
}

// dataURL reads an image into a data URL (Twilio's media URLs need
// credentials, so the model cannot fetch them itself), encoding as it reads.
func dataURL(d *media.Download, maxBytes int64) (string, error) {
	mt, _, err := mime.ParseMediaType(d.ContentType)
	if err != nil || !strings.HasPrefix(mt, "image/") {
		mt = "image/jpeg"
	}
	var b strings.Builder
	b.Grow(len("data:;base64,") + len(mt) + int(min(maxBytes, 1<<20)*4/3))
	b.WriteString("data:" + mt + ";base64,")
	enc := base64.NewEncoder(base64.StdEncoding, &b)
	if _, err := io.Copy(enc, d); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	return b.String(), nil
}
