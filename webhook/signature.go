package webhook

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"net/url"
	"slices"
	"strings"

	"github.com/twilio/twilio-go/client"
)

// Signature computes Twilio's X-Twilio-Signature for a form POST to fullURL:
// base64(HMAC-SHA1(token, URL + each key and value, keys sorted)). For a key
// that repeats, each distinct value is appended in sorted order, as Twilio's
// own helper libraries (Node, Python) sign them.
func Signature(authToken, fullURL string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(fullURL)
	for _, k := range keys {
		vals := slices.Clone(form[k])
		slices.Sort(vals)
		for _, v := range slices.Compact(vals) {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ValidSignature checks X-Twilio-Signature for a form POST. twilio-go's
// validator does the common case (and tries the URL with and without its
// default port); it signs only the first value of a repeated key, so for a
// form with repeated keys the all-values form is checked as well.
func ValidSignature(authToken, fullURL string, form url.Values, signature string) bool {
	if signature == "" {
		return false
	}
	params := make(map[string]string, len(form))
	repeated := false
	for k, v := range form {
		if len(v) > 0 {
			params[k] = v[0]
		}
		repeated = repeated || len(v) > 1
	}
	v := client.NewRequestValidator(authToken)
	if v.Validate(fullURL, params, signature) {
		return true
	}
	if !repeated {
		return false
	}
	for _, u := range withAndWithoutPort(fullURL) {
		if subtle.ConstantTimeCompare([]byte(Signature(authToken, u, form)), []byte(signature)) == 1 {
			return true
		}
	}
	return false
}

// withAndWithoutPort returns fullURL with its scheme's default port added and
// removed, as Twilio may sign either.
func withAndWithoutPort(fullURL string) []string {
	u, err := url.Parse(fullURL)
	if err != nil {
		return []string{fullURL}
	}
	host, port := u.Hostname(), u.Port()
	def := map[string]string{"https": "443", "http": "80"}[u.Scheme]
	if port == "" {
		with := *u
		with.Host = hostPort(host, def)
		return []string{fullURL, with.String()}
	}
	if port == def {
		without := *u
		without.Host = hostPort(host, "")
		return []string{fullURL, without.String()}
	}
	return []string{fullURL}
}

func hostPort(host, port string) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == "" {
		return host
	}
	return host + ":" + port
}
