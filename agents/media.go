package agents

import (
	"mime"
	"strings"

	"github.com/openai/openai-go/v3"
)

// What the agent reads for an attachment (docs/operations.md, "Media"). A
// voice note reads as its transcript when it has one.
const (
	// TextVoiceNote is a voice note with no transcriber (the offline provider).
	TextVoiceNote = "[voice note]"
	// TextVoiceNoteFailed is a voice note whose fetch or transcription failed.
	TextVoiceNoteFailed = "[voice note: could not be transcribed]"
	// TextImage is an image for an agent without vision (or whose image could
	// not be fetched).
	TextImage = "[image]"
)

// AttachmentState is how far an attachment got on its way to the agent.
type AttachmentState int

// The states of an attachment.
const (
	// AttachmentPlain: not fetched (no transcriber, no vision, or an earlier turn).
	AttachmentPlain AttachmentState = iota
	// AttachmentFailed: the fetch or the transcription failed.
	AttachmentFailed
	// AttachmentImagePart: the image goes to the model as an image part.
	AttachmentImagePart
)

// Attachment is one attachment of a customer's message as the agent's text
// shows it.
type Attachment struct {
	ContentType string
	State       AttachmentState
}

// MessageText is what the agent reads for a customer's message: its body,
// then each attachment in order. transcript, when not nil, is the message's
// voice notes' words and stands for all of them.
func MessageText(body string, transcript *string, atts []Attachment) string {
	parts := []string{}
	if strings.TrimSpace(body) != "" {
		parts = append(parts, body)
	}
	usedTranscript := false
	for _, a := range atts {
		mt, _, err := mime.ParseMediaType(a.ContentType)
		if err != nil {
			mt = strings.ToLower(strings.TrimSpace(a.ContentType))
		}
		switch {
		case strings.HasPrefix(mt, "audio/"):
			switch {
			case transcript != nil && !usedTranscript:
				usedTranscript = true
				parts = append(parts, *transcript)
			case transcript != nil:
			case a.State == AttachmentFailed:
				parts = append(parts, TextVoiceNoteFailed)
			default:
				parts = append(parts, TextVoiceNote)
			}
		case strings.HasPrefix(mt, "image/"):
			if a.State != AttachmentImagePart {
				parts = append(parts, TextImage)
			}
		default:
			if mt == "" {
				mt = "unknown"
			}
			parts = append(parts, "[attachment: "+mt+"]")
		}
	}
	return strings.Join(parts, "\n")
}

// pendingMessage is the user message of the burst to answer: text, plus the
// burst's images as image parts for an agent with vision.
func pendingMessage(req Request) openai.ChatCompletionMessageParamUnion {
	text := strings.Join(req.Pending, "\n")
	if len(req.Images) == 0 || !req.Agent.Vision {
		return openai.UserMessage(text)
	}
	parts := []openai.ChatCompletionContentPartUnionParam{}
	if text != "" {
		parts = append(parts, openai.TextContentPart(text))
	}
	for _, img := range req.Images {
		parts = append(parts, openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: img}))
	}
	return openai.UserMessage(parts)
}
