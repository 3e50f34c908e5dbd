package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/media"
	"github.com/conversa/conversa/jobs"
	"github.com/conversa/conversa/store"
)

// sandboxHost is where the sandbox Twilio listens (faketwilio.StartSandbox).
const sandboxHost = "http://127.0.0.1"

// mediaConfig reads TRANSCRIBE_MODEL (default whisper-1 with openai, none
// offline; "none" turns it off), MEDIA_MAX_BYTES and TOOLS_ALLOW_PRIVATE.
func mediaConfig(get func(name, def string) string, provider string, errs *[]error) (string, int64, bool) {
	def := ""
	if provider == "openai" {
		def = "whisper-1"
	}
	model := get("TRANSCRIBE_MODEL", def)
	if model == "none" {
		model = ""
	}
	v := get("MEDIA_MAX_BYTES", strconv.Itoa(media.DefaultMaxBytes))
	maxBytes, err := strconv.ParseInt(v, 10, 64)
	if err != nil || maxBytes <= 0 {
		*errs = append(*errs, fmt.Errorf("MEDIA_MAX_BYTES: %q is not a positive number of bytes", v))
	}
	allow := get("TOOLS_ALLOW_PRIVATE", "0")
	if allow != "0" && allow != "1" {
		*errs = append(*errs, fmt.Errorf("TOOLS_ALLOW_PRIVATE: %q is not 0 or 1", allow))
	}
	return model, maxBytes, allow == "1"
}

// mediaHosts is the host rule for inbound attachments on the HTTP edge.
func (a *app) mediaHosts() media.Hosts {
	apiURL := a.cfg.TwilioAPIURL
	if apiURL == "sandbox" {
		apiURL = sandboxHost
	}
	h, err := media.NewHosts(apiURL)
	if err != nil {
		// loadConfig checked TWILIO_API_URL; the zero rule admits Twilio only.
		return media.Hosts{}
	}
	return h
}

// newMedia builds the workers' media fetcher (for the Twilio API at apiURL,
// the sandbox's once started) and the transcriber of TRANSCRIBE_MODEL. The
// sandbox listens on loopback, so its media is fetched there whatever
// TOOLS_ALLOW_PRIVATE says.
func (a *app) newMedia(apiURL string) (jobs.Media, error) {
	f, err := media.NewFetcher(media.Config{
		TwilioAPIURL: apiURL,
		MaxBytes:     a.cfg.MediaMaxBytes,
		Timeout:      a.cfg.TwilioTimeout,
		AllowPrivate: a.cfg.ToolsAllowPrivate || a.cfg.TwilioAPIURL == "sandbox",
	})
	if err != nil {
		return jobs.Media{}, err
	}
	m := jobs.Media{Fetcher: f}
	if a.cfg.TranscribeModel != "" {
		t, err := agents.NewOpenAITranscriber(agents.TranscriberConfig{
			BaseURL: a.cfg.OpenAIBaseURL, APIKey: a.cfg.OpenAIAPIKey, Model: a.cfg.TranscribeModel,
		})
		if err != nil {
			return jobs.Media{}, err
		}
		m.Transcriber = t
	}
	return m, nil
}

// addDemoVoiceNote makes the demo's inbound message a WhatsApp voice note:
// the sandbox's sample, named by a Twilio media URL as Twilio would send it
// (the server fetches api.twilio.com media at TWILIO_API_URL, the sandbox).
func addDemoVoiceNote(form url.Values, accountSID, messageSID string) {
	form.Set("Body", "")
	form.Set("NumMedia", "1")
	form.Set("MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/"+accountSID+"/Messages/"+messageSID+"/Media/"+faketwilio.SandboxVoiceNoteSID)
	form.Set("MediaContentType0", "audio/wav")
	form.Set("MessageType", "audio")
}

// heard is what the agent read for the demo's voice note.
func (api demoAPI) heard(ctx context.Context, messageSID string) string {
	var found struct {
		Items []store.Message `json:"items"`
	}
	if err := api.get(ctx, "/messages?twilio_sid="+url.QueryEscape(messageSID), &found); err != nil || len(found.Items) == 0 {
		return "(the voice note was not found)"
	}
	if t := found.Items[0].Transcript; t != nil {
		return fmt.Sprintf("%q (the transcript the agent read)", *t)
	}
	return fmt.Sprintf("%s (no transcript: the server has no TRANSCRIBE_MODEL, or the note could not be transcribed; see the trace)", agents.TextVoiceNote)
}
