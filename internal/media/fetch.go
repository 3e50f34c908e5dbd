package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/conversa/conversa/internal/egress"
)

// Class names why an attachment did not reach the agent, for the media.failed
// trace event (never the provider's or Twilio's text).
type Class string

// The failure classes.
const (
	ClassNotFound      Class = "not_found"    // Twilio has no such media (404)
	ClassUnauthorized  Class = "unauthorized" // the account's credentials were refused (401/403)
	ClassTooLarge      Class = "too_large"    // over MEDIA_MAX_BYTES
	ClassTimeout       Class = "timeout"      // the fetch or the transcription took too long
	ClassHostRefused   Class = "host_refused" // a URL or redirect off Twilio's hosts, or to a private address
	ClassHTTP          Class = "http_error"   // any other non-2xx answer
	ClassNetwork       Class = "network"      // connection refused, reset, DNS
	ClassTranscription Class = "transcription_failed"
	ClassEmpty         Class = "empty_transcript" // the model heard no words
)

// Error is a failed fetch with its class.
type Error struct {
	Class Class
	// Status is the HTTP status, when there was one.
	Status int
	Err    error
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("media %s (http %d)", e.Class, e.Status)
	}
	if e.Err != nil {
		return fmt.Sprintf("media %s: %v", e.Class, e.Err)
	}
	return "media " + string(e.Class)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrTooLarge is read from a Download past the byte limit.
var ErrTooLarge = errors.New("media over the size limit")

// ClassOf classifies any error of a fetch (or of what read from it).
func ClassOf(err error) Class {
	var me *Error
	var netErr net.Error
	switch {
	case errors.As(err, &me):
		return me.Class
	case errors.Is(err, ErrTooLarge):
		return ClassTooLarge
	case errors.Is(err, ErrHostRefused), errors.Is(err, egress.ErrRefused):
		return ClassHostRefused
	case errors.Is(err, context.DeadlineExceeded):
		return ClassTimeout
	case errors.As(err, &netErr) && netErr.Timeout():
		return ClassTimeout
	default:
		return ClassNetwork
	}
}

// Config configures a Fetcher.
type Config struct {
	// TwilioAPIURL is TWILIO_API_URL (resolved from "sandbox"): its host name
	// may serve media, and media URLs on api.twilio.com are fetched there, as
	// sends are.
	TwilioAPIURL string
	// MaxBytes is MEDIA_MAX_BYTES. Default 5 MiB, Twilio's own limit.
	MaxBytes int64
	// Timeout bounds one fetch, from the request to the last byte read.
	// Default 10 s.
	Timeout time.Duration
	// AllowPrivate lets fetches reach loopback and private addresses
	// (TOOLS_ALLOW_PRIVATE=1: tests, the sandbox).
	AllowPrivate bool
}

// DefaultMaxBytes is MEDIA_MAX_BYTES's default.
const DefaultMaxBytes = 5 << 20

// maxRedirects bounds the hops to Twilio's media storage (one in practice).
const maxRedirects = 3

// Fetcher fetches attachments with an account's credentials.
type Fetcher struct {
	hosts    Hosts
	api      *url.URL
	client   *http.Client
	maxBytes int64
	timeout  time.Duration
}

// NewFetcher builds a Fetcher from cfg.
func NewFetcher(cfg Config) (*Fetcher, error) {
	hosts, err := NewHosts(cfg.TwilioAPIURL)
	if err != nil {
		return nil, err
	}
	api, _ := url.Parse(cfg.TwilioAPIURL)
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	// The address rule (egress) is checked on the address actually dialled,
	// after DNS, so a public name that resolves to a private address is
	// refused too.
	transport := egress.NewTransport(cfg.AllowPrivate, cfg.Timeout)
	f := &Fetcher{hosts: hosts, api: api, maxBytes: cfg.MaxBytes, timeout: cfg.Timeout}
	f.client = &http.Client{
		Transport: transport,
		// Twilio answers a media URL with a redirect to its storage. Every
		// hop obeys the host rule. Go drops the Authorization header on a
		// hop to another domain, so the credentials never leave Twilio.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return &Error{Class: ClassHTTP, Err: errors.New("too many redirects")}
			}
			return hosts.CheckURL(req.URL)
		},
	}
	return f, nil
}

// MaxBytes is the byte limit of one attachment.
func (f *Fetcher) MaxBytes() int64 { return f.maxBytes }

// Hosts is the host rule the fetcher applies.
func (f *Fetcher) Hosts() Hosts { return f.hosts }

// Download is an attachment being read: at most the fetcher's MaxBytes, then
// ErrTooLarge. It streams; nothing is buffered beyond what the reader asks.
type Download struct {
	// ContentType is what the media host said (parameters kept), or the
	// webhook's MediaContentType when it said nothing.
	ContentType string
	body        io.ReadCloser
	cancel      context.CancelFunc
	left        int64
	read        int64
}

// Read implements io.Reader.
func (d *Download) Read(p []byte) (int, error) {
	if d.left <= 0 {
		// One byte more tells "exactly the limit" from "over it".
		var one [1]byte
		if n, _ := d.body.Read(one[:]); n > 0 {
			return 0, ErrTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.body.Read(p)
	d.left -= int64(n)
	d.read += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		err = &Error{Class: ClassOf(err), Err: err}
	}
	return n, err
}

// Bytes is how many bytes have been read so far.
func (d *Download) Bytes() int64 { return d.read }

// Close releases the connection and the fetch's timeout.
func (d *Download) Close() error {
	err := d.body.Close()
	d.cancel()
	return err
}

// Open starts fetching rawURL with the account's credentials (HTTP basic
// auth) and returns the download once the media host answered 2xx; the
// fetch's timeout runs until Close. declaredType is the webhook's
// MediaContentType. Errors are *Error.
func (f *Fetcher) Open(ctx context.Context, rawURL, accountSID, authToken, declaredType string) (*Download, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Hostname() == "" {
		return nil, &Error{Class: ClassHostRefused, Err: ErrHostRefused}
	}
	if err := f.hosts.CheckURL(u); err != nil {
		return nil, &Error{Class: ClassHostRefused, Err: err}
	}
	if strings.EqualFold(u.Hostname(), twilioAPIHost) && !strings.EqualFold(f.api.Hostname(), twilioAPIHost) {
		// Twilio's media URLs name its REST API; a deployment on another
		// TWILIO_API_URL (the sandbox) fetches them there, as it sends there.
		c := *u
		c.Scheme, c.Host = f.api.Scheme, f.api.Host
		u = &c
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel()
		return nil, &Error{Class: ClassHostRefused, Err: err}
	}
	req.SetBasicAuth(accountSID, authToken)
	resp, err := f.client.Do(req)
	if err != nil {
		cancel()
		return nil, &Error{Class: ClassOf(err), Err: errors.Unwrap(err)}
	}
	fail := func(e *Error) (*Download, error) {
		resp.Body.Close()
		cancel()
		return nil, e
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fail(&Error{Class: ClassNotFound, Status: resp.StatusCode})
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fail(&Error{Class: ClassUnauthorized, Status: resp.StatusCode})
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return fail(&Error{Class: ClassHTTP, Status: resp.StatusCode})
	case resp.ContentLength > f.maxBytes:
		return fail(&Error{Class: ClassTooLarge, Err: ErrTooLarge})
	}
	ct := resp.Header.Get("Content-Type")
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		ct = declaredType
	}
	return &Download{ContentType: ct, body: resp.Body, cancel: cancel, left: f.maxBytes}, nil
}

// Kind is what an attachment is for the agent.
type Kind int

// The kinds of attachment.
const (
	KindOther Kind = iota
	KindAudio
	KindImage
)

// KindOf reads a content type ("audio/ogg; codecs=opus" is audio).
func KindOf(contentType string) Kind {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(contentType))
	}
	switch {
	case strings.HasPrefix(mt, "audio/"):
		return KindAudio
	case strings.HasPrefix(mt, "image/"):
		return KindImage
	}
	return KindOther
}
