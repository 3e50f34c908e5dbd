// Package twiliohook posts webhooks to Conversa the way Twilio does: a form
// POST signed with the account's auth token over PUBLIC_BASE_URL + path.
// The benchmarks and the chaos harness share it.
package twiliohook

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/conversa/conversa/internal/twilio/signature"
)

// Poster posts signed webhooks to one Conversa HTTP edge.
type Poster struct {
	// HC is the HTTP client (its timeout bounds a post).
	HC *http.Client
	// Target is where the edge listens, e.g. http://127.0.0.1:8080.
	Target string
	// PublicBaseURL is the edge's PUBLIC_BASE_URL, which signatures cover.
	PublicBaseURL string
}

// Post signs form with token for path (e.g. /twilio/inbound) and posts it.
// It returns the HTTP status; an error means no answer came.
func (p *Poster) Post(ctx context.Context, path, token string, form url.Values) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Target+path, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", signature.Sign(token, p.PublicBaseURL+path, form))
	resp, err := p.HC.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}
