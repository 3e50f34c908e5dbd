package webhook_test

import (
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/webhook"
)

// TestSignatureMatchesTwilioNodeHelper checks vectors produced by Twilio's
// official Node helper library (testdata/twilio_node_signatures.json; the
// generator is named in the file).
func TestSignatureMatchesTwilioNodeHelper(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("testdata/twilio_node_signatures.json")
	require.NoError(t, err)
	var file struct {
		Vectors []struct {
			Name, Token, URL, Signature string
			Form                        [][2]string
		}
	}
	require.NoError(t, json.Unmarshal(raw, &file))
	require.NotEmpty(t, file.Vectors)
	for _, v := range file.Vectors {
		form := url.Values{}
		for _, kv := range v.Form {
			form.Add(kv[0], kv[1])
		}
		require.Equal(t, v.Signature, webhook.Signature(v.Token, v.URL, form), v.Name)
		require.True(t, webhook.ValidSignature(v.Token, v.URL, form, v.Signature), v.Name)
		require.False(t, webhook.ValidSignature(v.Token+"x", v.URL, form, v.Signature), v.Name)
		require.False(t, webhook.ValidSignature(v.Token, v.URL+"x", form, v.Signature), v.Name)
	}
}

func TestSignatureWithAndWithoutDefaultPort(t *testing.T) {
	t.Parallel()
	form := url.Values{"MessageSid": {"SM1"}, "Body": {"hi"}}
	for _, pair := range [][2]string{
		{"https://example.com/twilio/inbound", "https://example.com:443/twilio/inbound"},
		{"http://example.com/twilio/inbound", "http://example.com:80/twilio/inbound"},
	} {
		signedWithout := webhook.Signature("tok", pair[0], form)
		signedWith := webhook.Signature("tok", pair[1], form)
		require.True(t, webhook.ValidSignature("tok", pair[1], form, signedWithout))
		require.True(t, webhook.ValidSignature("tok", pair[0], form, signedWith))
	}
	// Like Twilio's own helpers, any port is also tried removed; the path,
	// query and host are always part of what was signed.
	require.False(t, webhook.ValidSignature("tok", "https://example.org/twilio/inbound", form,
		webhook.Signature("tok", "https://example.com/twilio/inbound", form)))
}

func TestSignatureRepeatedKeys(t *testing.T) {
	t.Parallel()
	form := url.Values{"Tag": {"b", "a"}, "MessageSid": {"SM1"}}
	u := "https://example.com/twilio/inbound"
	// Twilio's helpers sign every value (sorted); twilio-go signs only the first.
	all := webhook.Signature("tok", u, form)
	require.True(t, webhook.ValidSignature("tok", u, form, all))
	first := webhook.Signature("tok", u, url.Values{"Tag": {"b"}, "MessageSid": {"SM1"}})
	require.True(t, webhook.ValidSignature("tok", u, form, first), "twilio-go's first-value form is accepted too")
	require.False(t, webhook.ValidSignature("tok", u, form, ""))
	require.False(t, webhook.ValidSignature("tok", u, form, strings.Repeat("A", 28)))
}
