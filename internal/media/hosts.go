package media

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrHostRefused is a media URL (or a redirect) that points anywhere but
// Twilio's hosts or the host name of TWILIO_API_URL.
var ErrHostRefused = errors.New("media host refused")

// Hosts is the rule for where media may be fetched from: Twilio's REST and
// media hosts over https, and the host name of TWILIO_API_URL on any port
// (how the sandbox and tests serve media), over its own scheme. It holds for
// the URL a webhook names and for every redirect hop, so a forged or signed
// webhook alike cannot make Conversa fetch an arbitrary URL.
type Hosts struct {
	// apiHost is TWILIO_API_URL's host name, lowercased; apiScheme its scheme.
	apiHost, apiScheme string
}

// twilioDomains are Twilio's own domains: the REST API (api.twilio.com) and
// the media storage its redirect points at (mms.twiliocdn.com).
var twilioDomains = []string{"twilio.com", "twiliocdn.com"}

// legacyStorage is where Twilio kept media before HTTP auth on media URLs:
// one Amazon S3 host, under Twilio's bucket only.
const (
	legacyStorageHost = "s3-external-1.amazonaws.com"
	legacyStoragePath = "/media.twiliocdn.com/"
)

// NewHosts returns the rule for a deployment whose Twilio REST API is at
// apiURL (TWILIO_API_URL, already resolved from "sandbox").
func NewHosts(apiURL string) (Hosts, error) {
	u, err := url.Parse(apiURL)
	if err != nil || u.Hostname() == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return Hosts{}, fmt.Errorf("media hosts: TWILIO_API_URL %q is not an http(s) URL", apiURL)
	}
	return Hosts{apiHost: strings.ToLower(u.Hostname()), apiScheme: u.Scheme}, nil
}

// Check reports whether raw may be fetched; the error wraps ErrHostRefused.
func (h Hosts) Check(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("%w: not an absolute URL", ErrHostRefused)
	}
	return h.CheckURL(u)
}

// CheckURL is Check for a parsed URL.
func (h Hosts) CheckURL(u *url.URL) error {
	if u.User != nil {
		return fmt.Errorf("%w: URL carries credentials", ErrHostRefused)
	}
	host := strings.ToLower(u.Hostname())
	if host == h.apiHost && h.apiHost != "" && (u.Scheme == h.apiScheme || u.Scheme == "https") {
		return nil
	}
	if u.Scheme != "https" {
		return fmt.Errorf("%w: %s is not https", ErrHostRefused, u.Scheme)
	}
	for _, d := range twilioDomains {
		if host == d || strings.HasSuffix(host, "."+d) {
			return nil
		}
	}
	if host == legacyStorageHost && strings.HasPrefix(u.EscapedPath(), legacyStoragePath) {
		return nil
	}
	return fmt.Errorf("%w: %s is not a Twilio host", ErrHostRefused, host)
}

// twilioAPIHost is where Twilio's MediaUrlN point: its REST API.
const twilioAPIHost = "api.twilio.com"
