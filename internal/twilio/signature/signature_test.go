package signature_test

import (
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twilio/twilio-go/client"

	"github.com/conversa/conversa/internal/twilio/signature"
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
		require.Equal(t, v.Signature, signature.Sign(v.Token, v.URL, form), v.Name)
		require.True(t, signature.Valid(v.Token, v.URL, form, v.Signature), v.Name)
		require.False(t, signature.Valid(v.Token+"x", v.URL, form, v.Signature), v.Name)
		require.False(t, signature.Valid(v.Token, v.URL+"x", form, v.Signature), v.Name)
	}
}

func TestSignatureWithAndWithoutDefaultPort(t *testing.T) {
	t.Parallel()
	form := url.Values{"MessageSid": {"SM1"}, "Body": {"hi"}}
	for _, pair := range [][2]string{
		{"https://example.com/twilio/inbound", "https://example.com:443/twilio/inbound"},
		{"http://example.com/twilio/inbound", "http://example.com:80/twilio/inbound"},
	} {
		signedWithout := signature.Sign("tok", pair[0], form)
		signedWith := signature.Sign("tok", pair[1], form)
		require.True(t, signature.Valid("tok", pair[1], form, signedWithout))
		require.True(t, signature.Valid("tok", pair[0], form, signedWith))
	}
	// Like Twilio's own helpers, any port is also tried removed; the path,
	// query and host are always part of what was signed.
	require.False(t, signature.Valid("tok", "https://example.org/twilio/inbound", form,
		signature.Sign("tok", "https://example.com/twilio/inbound", form)))
}

func TestSignatureRepeatedKeys(t *testing.T) {
	t.Parallel()
	form := url.Values{"Tag": {"b", "a"}, "MessageSid": {"SM1"}}
	u := "https://example.com/twilio/inbound"
	// Twilio's helpers sign every value (sorted); twilio-go signs only the first.
	all := signature.Sign("tok", u, form)
	require.True(t, signature.Valid("tok", u, form, all))
	first := signature.Sign("tok", u, url.Values{"Tag": {"b"}, "MessageSid": {"SM1"}})
	require.True(t, signature.Valid("tok", u, form, first), "twilio-go's first-value form is accepted too")
	require.False(t, signature.Valid("tok", u, form, ""))
	require.False(t, signature.Valid("tok", u, form, strings.Repeat("A", 28)))
}

func TestSignatureMatchesTwilioGoVector(t *testing.T) {
	t.Parallel()
	// The vector from twilio-go's client/request_validator_test.go.
	form := url.Values{
		"Digits":                {"1234"},
		"CallSid":               {"CA1234567890ABCDE"},
		"To":                    {"+18005551212"},
		"Caller":                {"+14158675309"},
		"From":                  {"+14158675309"},
		"ReasonConferenceEnded": {"test"},
		"Reason":                {"Participant"},
	}
	u := "https://mycompany.com/myapp.php?foo=1&bar=2"
	require.Equal(t, "vOEb5UThFn24KEfnOFLQY2AE5FY=", signature.Sign("12345", u, form))
	require.True(t, signature.Valid("12345", u, form, "vOEb5UThFn24KEfnOFLQY2AE5FY="))
	require.False(t, signature.Valid("12345", u, form, "vOEb5UThFn24KEfnOFLQY2AE5FZ="))
}

// TestValidAcceptsWhatTwilioGoAccepts checks the validator against
// twilio-go's own on URLs with and without ports and forms with repeated
// keys: whatever twilio-go's validator takes, Valid takes too, and a wrong
// token is refused by both.
func TestValidAcceptsWhatTwilioGoAccepts(t *testing.T) {
	t.Parallel()
	forms := []url.Values{
		{"MessageSid": {"SM1"}, "Body": {"hi there"}},
		{"MessageSid": {"SM1"}, "Tag": {"b", "a"}, "Empty": {}},
	}
	urls := []string{
		"https://example.com/twilio/inbound?m=7",
		"https://example.com:443/twilio/inbound",
		"https://example.com:8443/twilio/status?m=1",
		"http://example.com/twilio/inbound",
		"http://127.0.0.1:8080/twilio/inbound",
	}
	for _, form := range forms {
		first := map[string]string{}
		for k, v := range form {
			if len(v) > 0 {
				first[k] = v[0]
			}
		}
		for _, signedURL := range urls {
			for _, checkedURL := range urls {
				sig := signature.Sign("tok", signedURL, mapForm(first))
				v := client.NewRequestValidator("tok")
				if v.Validate(checkedURL, first, sig) {
					require.True(t, signature.Valid("tok", checkedURL, form, sig), "signed %s, checked %s", signedURL, checkedURL)
				}
				require.False(t, signature.Valid("other", checkedURL, form, sig))
			}
		}
	}
}

func mapForm(m map[string]string) url.Values {
	f := url.Values{}
	for k, v := range m {
		f.Set(k, v)
	}
	return f
}
