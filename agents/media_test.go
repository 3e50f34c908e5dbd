package agents_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/agents"
)

func TestOpenAIGivesAVisionAgentImageParts(t *testing.T) {
	t.Parallel()
	f, p := newFakeOpenAI(t, text("That box looks crushed; I'm sorry."))
	img := "data:image/png;base64,UE5HREFUQQ=="
	req := agents.Request{Agent: agents.Agent{Name: "seer", Vision: true}, Pending: []string{"my parcel\n[image]"}, Images: []string{img}}
	_, err := p.Reply(t.Context(), req)
	require.NoError(t, err)
	body := <-f.bodies
	msgs := body["messages"].([]any)
	last := msgs[len(msgs)-1].(map[string]any)
	require.Equal(t, "user", last["role"])
	parts := last["content"].([]any)
	require.Len(t, parts, 2)
	require.Equal(t, map[string]any{"type": "text", "text": "my parcel\n[image]"}, parts[0])
	require.Equal(t, "image_url", parts[1].(map[string]any)["type"])
	require.Equal(t, img, parts[1].(map[string]any)["image_url"].(map[string]any)["url"])

	// Without vision the same request is text only.
	req.Agent.Vision = false
	_, err = p.Reply(t.Context(), req)
	require.NoError(t, err)
	body = <-f.bodies
	msgs = body["messages"].([]any)
	require.Equal(t, "my parcel\n[image]", msgs[len(msgs)-1].(map[string]any)["content"])
}

func TestMessageTextPerAttachmentType(t *testing.T) {
	t.Parallel()
	words := "call me back"
	att := func(ct string, st agents.AttachmentState) agents.Attachment {
		return agents.Attachment{ContentType: ct, State: st}
	}
	require.Equal(t, "call me back", agents.MessageText("", &words, []agents.Attachment{att("audio/ogg; codecs=opus", agents.AttachmentPlain)}))
	require.Equal(t, "[voice note]", agents.MessageText("", nil, []agents.Attachment{att("audio/amr", agents.AttachmentPlain)}))
	require.Equal(t, "hi\n[voice note: could not be transcribed]", agents.MessageText("hi", nil, []agents.Attachment{att("audio/ogg; codecs=opus", agents.AttachmentFailed)}))
	require.Equal(t, "[image]", agents.MessageText("", nil, []agents.Attachment{att("image/webp", agents.AttachmentPlain)}))
	require.Equal(t, "[attachment: text/vcard]", agents.MessageText("", nil, []agents.Attachment{att("text/vcard", agents.AttachmentPlain)}))
	require.True(t, strings.HasPrefix(agents.MessageText("", nil, []agents.Attachment{att("", agents.AttachmentPlain)}), "[attachment: "))
}
