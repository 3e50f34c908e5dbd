package agents

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// Transcriber turns a voice note into text.
type Transcriber interface {
	// Transcribe reads audio (of contentType) to its end and returns its words.
	Transcribe(ctx context.Context, audio io.Reader, contentType string) (Transcript, error)
}

// Transcript is a voice note's words and what transcribing it took.
type Transcript struct {
	Text  string
	Model string
	// Seconds is the audio's duration, when the server says (0 otherwise).
	Seconds float64
	Latency time.Duration
}

// TranscriberConfig configures the OpenAI-compatible transcriber.
type TranscriberConfig struct {
	// BaseURL and APIKey are the same server's as the openai provider's
	// (OPENAI_BASE_URL, OPENAI_API_KEY).
	BaseURL string
	APIKey  string
	// Model is TRANSCRIBE_MODEL (whisper-1 on OpenAI).
	Model string
	// Timeout bounds one transcription. Default 30 s.
	Timeout time.Duration
	// HTTPClient is optional (tests).
	HTTPClient *http.Client
}

// OpenAITranscriber transcribes through POST /v1/audio/transcriptions.
type OpenAITranscriber struct {
	client  openai.Client
	model   string
	timeout time.Duration
}

// NewOpenAITranscriber builds the transcriber. It reads no environment.
func NewOpenAITranscriber(cfg TranscriberConfig) (*OpenAITranscriber, error) {
	if cfg.Model == "" {
		return nil, errors.New("transcriber: model is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	opts := []option.RequestOption{
		option.WithAPIKey(cfg.APIKey),
		// The audio is streamed from Twilio, so a request cannot be replayed:
		// a failed transcription is reported, and the turn goes on.
		option.WithMaxRetries(0),
	}
	if cfg.BaseURL != "" {
		opts = append(opts, option.WithBaseURL(strings.TrimRight(cfg.BaseURL, "/")+"/"))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, option.WithHTTPClient(cfg.HTTPClient))
	}
	return &OpenAITranscriber{client: openai.NewClient(opts...), model: cfg.Model, timeout: cfg.Timeout}, nil
}

// Model is the transcription model.
func (t *OpenAITranscriber) Model() string { return t.model }

// Transcribe implements Transcriber. The audio is streamed into the
// multipart request as it arrives: memory held per note is a copy buffer,
// not the note (the SDK's own multipart encoding would buffer all of it).
func (t *OpenAITranscriber) Transcribe(ctx context.Context, audio io.Reader, contentType string) (Transcript, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	format := openai.AudioResponseFormatJSON
	if strings.HasPrefix(t.model, "whisper") {
		// whisper-1 reports the duration only in verbose_json.
		format = openai.AudioResponseFormatVerboseJSON
	}
	params := openai.AudioTranscriptionNewParams{
		Model:          openai.AudioModel(t.model),
		File:           openai.File(audio, audioFilename(contentType), contentType),
		ResponseFormat: format,
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := params.MarshalMultipartTo(mw)
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	defer pr.Close() // stops the writer if the request ended early

	start := time.Now()
	// The body given to New is only serialised (empty file) and replaced by
	// the streamed one.
	empty := openai.AudioTranscriptionNewParams{Model: params.Model, File: strings.NewReader(""), ResponseFormat: format}
	resp, err := t.client.Audio.Transcriptions.New(ctx, empty, option.WithRequestBody(mw.FormDataContentType(), pr))
	out := Transcript{Model: t.model, Latency: time.Since(start)}
	if err != nil {
		return out, fmt.Errorf("transcribe: %w", err)
	}
	out.Text = strings.TrimSpace(resp.Text)
	out.Seconds = resp.Duration
	if out.Seconds == 0 {
		out.Seconds = resp.Usage.Seconds
	}
	return out, nil
}

// audioFilename names the upload: OpenAI tells formats by the extension.
func audioFilename(contentType string) string {
	mt, _, _ := mime.ParseMediaType(contentType)
	ext := map[string]string{
		"audio/ogg": "ogg", "audio/opus": "ogg", "audio/mpeg": "mp3", "audio/mp3": "mp3",
		"audio/mp4": "m4a", "audio/m4a": "m4a", "audio/x-m4a": "m4a", "audio/aac": "m4a",
		"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/webm": "webm",
		"audio/amr": "amr", "audio/flac": "flac",
	}[mt]
	if ext == "" {
		ext = "ogg"
	}
	return "voice-note." + ext
}
