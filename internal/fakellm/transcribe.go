package fakellm

// The fake's speech-to-text endpoint (docs/operations.md, "Media").

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

// TranscriptionsPath is where the OpenAI-compatible API takes audio.
const TranscriptionsPath = "/v1/audio/transcriptions"

// Transcriber is a fake OpenAI-compatible POST /v1/audio/transcriptions: an
// http.Handler to mount next to the chat fake. It reads the multipart upload
// as a stream (as a real server does), takes Latency after the last byte,
// and answers in the requested response_format ("json": text and usage
// seconds; "verbose_json": text and duration). The "audio" of tests is text:
// an upload that is printable UTF-8 is transcribed as itself, anything else
// as "Fake transcript of a N-byte voice note". Errors have OpenAI's shape.
type Transcriber struct {
	latency  atomic.Int64 // time.Duration
	failNext atomic.Int64
	failCode atomic.Int64
	calls    atomic.Int64
	inFlight atomic.Int64
	maxIn    atomic.Int64
	bytes    atomic.Int64
}

// NewTranscriber returns a fake that takes latency per transcription.
func NewTranscriber(latency time.Duration) *Transcriber {
	t := &Transcriber{}
	t.latency.Store(int64(latency))
	return t
}

// SetLatency changes how long each transcription takes from now on.
func (t *Transcriber) SetLatency(d time.Duration) { t.latency.Store(int64(d)) }

// FailNext makes the next n transcriptions answer status (500 when 0).
func (t *Transcriber) FailNext(n int, status int) {
	if status == 0 {
		status = http.StatusInternalServerError
	}
	t.failCode.Store(int64(status))
	t.failNext.Store(int64(n))
}

// Calls is how many transcriptions were requested.
func (t *Transcriber) Calls() int64 { return t.calls.Load() }

// MaxInFlight is the most transcriptions held at once.
func (t *Transcriber) MaxInFlight() int64 { return t.maxIn.Load() }

// Bytes is how many audio bytes were uploaded in all.
func (t *Transcriber) Bytes() int64 { return t.bytes.Load() }

// headBytes is how much of an upload is kept to make the transcript.
const headBytes = 4 << 10

// ServeHTTP implements http.Handler.
func (t *Transcriber) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || strings.TrimSuffix(r.URL.Path, "/") != TranscriptionsPath {
		writeTranscribeError(w, http.StatusNotFound, "invalid_request_error", "unknown endpoint")
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		writeTranscribeError(w, http.StatusUnauthorized, "invalid_request_error", "You didn't provide an API key.")
		return
	}
	t.calls.Add(1)
	n := t.inFlight.Add(1)
	defer t.inFlight.Add(-1)
	for m := t.maxIn.Load(); n > m && !t.maxIn.CompareAndSwap(m, n); m = t.maxIn.Load() {
	}

	mr, err := r.MultipartReader()
	if err != nil {
		writeTranscribeError(w, http.StatusBadRequest, "invalid_request_error", "expected a multipart/form-data body")
		return
	}
	var model, format string
	var head []byte
	var size int64
	var haveFile bool
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			writeTranscribeError(w, http.StatusBadRequest, "invalid_request_error", "could not read the multipart body")
			return
		}
		switch p.FormName() {
		case "file":
			haveFile = true
			head, _ = io.ReadAll(io.LimitReader(p, headBytes))
			rest, err := io.Copy(io.Discard, p)
			if err != nil {
				writeTranscribeError(w, http.StatusBadRequest, "invalid_request_error", "the upload was cut short")
				return
			}
			size = int64(len(head)) + rest
		case "model":
			b, _ := io.ReadAll(io.LimitReader(p, 200))
			model = string(b)
		case "response_format":
			b, _ := io.ReadAll(io.LimitReader(p, 50))
			format = string(b)
		default:
			_, _ = io.Copy(io.Discard, p)
		}
	}
	t.bytes.Add(size)
	if model == "" || !haveFile {
		writeTranscribeError(w, http.StatusBadRequest, "invalid_request_error", "model and file are required")
		return
	}
	if d := time.Duration(t.latency.Load()); d > 0 {
		timer := time.NewTimer(d)
		select {
		case <-r.Context().Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
	if t.failNext.Add(-1) >= 0 {
		writeTranscribeError(w, int(t.failCode.Load()), "server_error", "The server had an error while processing your request.")
		return
	}
	text := fmt.Sprintf("Fake transcript of a %d-byte voice note", size)
	if int64(len(head)) == size && size > 0 && printable(head) {
		text = strings.TrimSpace(string(head))
	}
	seconds := float64(size) / 16000
	var body any = map[string]any{"text": text, "usage": map[string]any{"type": "duration", "seconds": seconds}}
	if format == "verbose_json" {
		body = map[string]any{"task": "transcribe", "language": "english", "duration": seconds, "text": text, "segments": []any{}}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && !unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

func writeTranscribeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}})
}
