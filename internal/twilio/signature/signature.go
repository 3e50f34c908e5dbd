package signature

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"net/url"
	"slices"
	"strings"
)

// Sign computes Twilio's X-Twilio-Signature for a form POST to fullURL:
// base64(HMAC-SHA1(token, URL + each key and value, keys sorted)). For a key
// that repeats, each distinct value is appended in sorted order, as Twilio's
// own helper libraries (Node, Python) sign them.
func Sign(authToken, fullURL string, form url.Values) string {
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

// Valid checks X-Twilio-Signature for a form POST, in constant time. It
// accepts the URL as Twilio may have signed it, with its scheme's default
// port added or its port removed (Twilio's own signing is inconsistent about
// ports; twilio-go's validator tries the same two). For a key that repeats,
// both the all-values form (Twilio's Node and Python helpers) and the
// first-value form (twilio-go's validator) are accepted.
func Valid(authToken, fullURL string, form url.Values, signature string) bool {
	if signature == "" {
		return false
	}
	forms := []url.Values{form}
	first := make(url.Values, len(form))
	repeated := false
	for k, v := range form {
		if len(v) > 0 {
			first[k] = v[:1]
		}
		repeated = repeated || len(v) > 1
	}
	if repeated {
		forms = append(forms, first)
	}
	for _, u := range withAndWithoutPort(fullURL) {
		for _, f := range forms {
			if subtle.ConstantTimeCompare([]byte(Sign(authToken, u, f)), []byte(signature)) == 1 {
				return true
			}
		}
	}
	return false
}

// withAndWithoutPort returns fullURL and, as Twilio may sign either, the
// same URL with its scheme's default port added (when it has no port) or
// with its port removed (when it has one).
func withAndWithoutPort(fullURL string) []string {
	u, err := url.Parse(fullURL)
	if err != nil {
		return []string{fullURL}
	}
	host, port := u.Hostname(), u.Port()
	other := *u
	if port == "" {
		def := "80"
		if u.Scheme == "https" {
			def = "443"
		}
		other.Host = hostPort(host, def)
	} else {
		other.Host = hostPort(host, "")
	}
	return []string{fullURL, other.String()}
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
