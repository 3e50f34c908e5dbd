package twilio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	twiliogo "github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"
)

// Client sends messages through Twilio's REST API at a configurable base URL
// (TWILIO_API_URL), with a per-request timeout (TWILIO_TIMEOUT). twilio-go has
// no base-URL option and no context: a RoundTripper rewrites scheme and host,
// and the client timeout bounds every request (it must stay below River's
// job timeout).
type Client struct {
	http *http.Client
}

// Timeout is the per-request timeout: the longest one call to Twilio takes.
func (t *Client) Timeout() time.Duration { return t.http.Timeout }

// New returns a client for the API at apiURL (https://api.twilio.com,
// or the sandbox's URL) whose requests give up after timeout.
func New(apiURL string, timeout time.Duration) (*Client, error) {
	u, err := url.Parse(apiURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("twilio API URL %q is not an http(s) URL", apiURL)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("twilio timeout must be above zero")
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 64
	return &Client{http: &http.Client{
		Transport: &rewriteHost{scheme: u.Scheme, host: u.Host, base: base},
		Timeout:   timeout,
		// As twilio-go's default client: never follow redirects.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// rewriteHost sends every request to one scheme and host, keeping the path.
type rewriteHost struct {
	scheme, host string
	base         http.RoundTripper
}

func (rt *rewriteHost) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host, r.Host = rt.scheme, rt.host, ""
	resp, err := rt.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	return typedErrorBody(resp)
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// statusError is an error answer from Twilio whose body is not Twilio's JSON
// error (an HTML page from a proxy, or a body cut off): twilio-go could only
// report it as text, so the transport reports it with its status instead.
type statusError struct{ status int }

func (e *statusError) Error() string {
	return fmt.Sprintf("twilio answered HTTP %d without a readable error body", e.status)
}

// typedErrorBody passes on every answer twilio-go can read — a success, a
// redirect, or an error whose body decodes as Twilio's JSON error (which
// twilio-go turns into a *client.TwilioRestError) — and turns any other
// error answer into a *statusError, so Classify sees the HTTP status as a
// value rather than in an error's text.
func typedErrorBody(resp *http.Response) (*http.Response, error) {
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
	if err == nil && json.NewDecoder(bytes.NewReader(body)).Decode(&client.TwilioRestError{}) == nil {
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return resp, nil
	}
	return nil, &statusError{status: resp.StatusCode}
}

// rest returns a twilio-go client for one account.
func (t *Client) rest(accountSID, authToken string) *twiliogo.RestClient {
	c := &client.Client{Credentials: client.NewCredentials(accountSID, authToken), HTTPClient: t.http}
	c.SetAccountSid(accountSID)
	return twiliogo.NewRestClientWithParams(twiliogo.ClientParams{Client: c})
}

// Outgoing is one message to send.
type Outgoing struct {
	AccountSID, AuthToken string
	From, To              string
	// Body is sent unless ContentSID (a WhatsApp template) is set.
	Body             string
	ContentSID       string
	ContentVariables string
	StatusCallback   string
}

// Send creates the message at Twilio and returns its SID and status. Classify
// the error to know what happened.
func (t *Client) Send(o Outgoing) (sid, status string, err error) {
	p := &openapi.CreateMessageParams{}
	p.SetTo(o.To).SetFrom(o.From).SetStatusCallback(o.StatusCallback)
	if o.ContentSID != "" {
		p.SetContentSid(o.ContentSID)
		if o.ContentVariables != "" {
			p.SetContentVariables(o.ContentVariables)
		}
	} else {
		p.SetBody(o.Body)
	}
	m, err := t.rest(o.AccountSID, o.AuthToken).Api.CreateMessage(p)
	if err != nil {
		return "", "", err
	}
	if m == nil || m.Sid == nil || *m.Sid == "" {
		return "", "", errors.New("twilio answered without a message SID")
	}
	status = "queued"
	if m.Status != nil && *m.Status != "" {
		status = *m.Status
	}
	return *m.Sid, status, nil
}

// Fetched is one message as Twilio's fetch answers it.
type Fetched struct {
	Status    string
	ErrorCode int
}

// Fetch reads one message (GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json)
// with its account's credentials. Classify the error with ClassifyFetch.
func (t *Client) Fetch(accountSID, authToken, sid string) (Fetched, error) {
	m, err := t.rest(accountSID, authToken).Api.FetchMessage(url.PathEscape(sid), &openapi.FetchMessageParams{})
	if err != nil {
		return Fetched{}, err
	}
	if m == nil || m.Status == nil || *m.Status == "" {
		return Fetched{}, errors.New("twilio answered without a message status")
	}
	f := Fetched{Status: *m.Status}
	if m.ErrorCode != nil {
		f.ErrorCode = *m.ErrorCode
	}
	return f, nil
}

// Sent is a message found in Twilio's message list.
type Sent struct {
	SID, Status, Body string
	Created           time.Time
}

// maxLookupPages bounds a look-up (each page is one request within the job
// timeout): To+From narrow the list to one conversation, newest first, and
// the window is minutes, so one page of 50 nearly always covers it.
const maxLookupPages = 2

// FindSent lists the messages from → to that Twilio created at or after
// since, newest first. It filters on date_created itself rather than with
// Twilio's DateSent filter, which skips messages still queued (no date_sent).
func (t *Client) FindSent(accountSID, authToken, from, to string, since time.Time) ([]Sent, error) {
	rc := t.rest(accountSID, authToken)
	p := &openapi.ListMessageParams{}
	p.SetTo(to).SetFrom(from).SetPageSize(50)
	var out []Sent
	for page := 0; page < maxLookupPages; page++ {
		resp, err := rc.Api.PageMessage(p, "", strconv.Itoa(page))
		if err != nil {
			return nil, err
		}
		for _, m := range resp.Messages {
			if m.Sid == nil || m.DateCreated == nil {
				continue
			}
			created, err := time.Parse(time.RFC1123Z, *m.DateCreated)
			if err != nil {
				continue
			}
			if created.Before(since) {
				return out, nil
			}
			s := Sent{SID: *m.Sid, Created: created}
			if m.Status != nil {
				s.Status = *m.Status
			}
			if m.Body != nil {
				s.Body = *m.Body
			}
			out = append(out, s)
		}
		if resp.NextPageUri == nil || *resp.NextPageUri == "" {
			return out, nil
		}
	}
	return out, nil
}

// Send outcome classes, as the conversa_twilio_sends_total metric labels them.
const (
	ClassAccepted  = "accepted"
	ClassRetry     = "retry"
	ClassPermanent = "permanent"
	ClassAmbiguous = "ambiguous"
)

// SendError is a classified Twilio send failure.
type SendError struct {
	// Class is ClassRetry (Twilio did not take it: try again later),
	// ClassPermanent (it never will: fail the message) or ClassAmbiguous (it
	// may exist at Twilio: look before sending again).
	Class string
	// Code is Twilio's error code (0 when there is none).
	Code int
	// HTTPStatus is the HTTP status when known.
	HTTPStatus int
	// Reason is a short, stable, log-safe reason.
	Reason string
	Err    error
}

// Error leaves Twilio's own text out: it can hold phone numbers, and the
// error is stored with the job and logged.
func (e *SendError) Error() string {
	return fmt.Sprintf("twilio %s: %s (code %d, http %d)", e.Class, e.Reason, e.Code, e.HTTPStatus)
}

func (e *SendError) Unwrap() error { return e.Err }

// CodeString is Twilio's error code as stored on a message ("" for none).
func (e *SendError) CodeString() string {
	if e.Code == 0 {
		return ""
	}
	return strconv.Itoa(e.Code)
}

// transientCodes are Twilio errors where the message was not taken but may be later.
var transientCodes = map[int]string{
	20429: "too_many_requests",
	21611: "sender_queue_full",
	30001: "queue_overflow",
	63017: "account_rate_limit",
	63018: "channel_rate_limit",
	63038: "daily_limit",
}

// permanentReasons name the common permanent errors; any other 4xx with a
// code is permanent too (Twilio refused it and will again).
var permanentReasons = map[int]string{
	20003: "authentication_failed",
	21211: "invalid_to",
	21212: "invalid_from",
	21408: "region_not_enabled",
	21601: "invalid_from",
	21602: "body_required",
	21604: "to_required",
	21606: "from_not_capable",
	21608: "unverified_number",
	21610: "unsubscribed",
	21612: "route_not_possible",
	21614: "not_a_mobile_number",
	21617: "body_too_long",
	21635: "landline",
	21910: "channel_mismatch",
	63003: "not_a_whatsapp_user",
	63007: "unknown_whatsapp_sender",
	63014: "blocked_by_user",
	63016: "outside_whatsapp_window",
}

// Classify sorts a Send error into retry, permanent or ambiguous. Only what
// proves Twilio did not create the message is retried blindly: a 429 or a
// refused connection. A timeout, a 5xx, a dropped connection or an
// unreadable answer may hide a created message.
func Classify(err error) *SendError {
	se := &SendError{Class: ClassAmbiguous, Reason: "unknown_outcome", Err: err}
	var rest *client.TwilioRestError
	var status *statusError
	var uerr *url.Error
	switch {
	case errors.As(err, &status):
		// An error answer that is not Twilio's JSON (a proxy's page): the
		// status is all there is.
		se.HTTPStatus = status.status
		if se.HTTPStatus == http.StatusTooManyRequests {
			se.Class, se.Reason = ClassRetry, "too_many_requests"
			return se
		}
		se.Reason = "unreadable_error_body"
		return se
	case errors.As(err, &rest):
		se.Code, se.HTTPStatus = rest.Code, rest.Status
		if reason, ok := transientCodes[rest.Code]; ok || rest.Status == http.StatusTooManyRequests {
			se.Class, se.Reason = ClassRetry, reason
			if se.Reason == "" {
				se.Reason = "too_many_requests"
			}
			return se
		}
		if rest.Status >= 500 {
			se.Reason = "twilio_server_error"
			return se
		}
		se.Class = ClassPermanent
		se.Reason = permanentReasons[rest.Code]
		if se.Reason == "" {
			se.Reason = "twilio_error_" + strconv.Itoa(rest.Code)
		}
		return se
	case errors.As(err, &uerr):
		if uerr.Timeout() {
			se.Reason = "timeout"
			return se
		}
		var op *net.OpError
		if errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &op) && op.Op == "dial") {
			// The connection never opened: nothing reached Twilio.
			se.Class, se.Reason = ClassRetry, "connection_refused"
			return se
		}
		var dns *net.DNSError
		if errors.As(err, &dns) {
			se.Class, se.Reason = ClassRetry, "dns_error"
			return se
		}
		se.Reason = "connection_lost"
		return se
	}
	return se
}

// Fetch outcome classes (store.ReconcileReport.Class), as the trace and
// conversa_reconcile_total name them.
const (
	FetchNotFound     = "not_found"
	FetchUnauthorized = "unauthorized"
	FetchRateLimited  = "rate_limited"
	FetchUnavailable  = "unavailable"
)

// ClassifyFetch sorts a Fetch error: 404 (deleted at Twilio: it will never
// say more), 401/403 (credentials no longer valid), 429, or anything else
// (5xx, timeouts, a dropped connection: try again later). It also returns
// the HTTP status when Twilio gave one.
func ClassifyFetch(err error) (class string, httpStatus int) {
	var rest *client.TwilioRestError
	if errors.As(err, &rest) {
		switch {
		case rest.Status == http.StatusNotFound:
			return FetchNotFound, rest.Status
		case rest.Status == http.StatusUnauthorized || rest.Status == http.StatusForbidden || rest.Code == 20003:
			return FetchUnauthorized, rest.Status
		case rest.Status == http.StatusTooManyRequests || rest.Code == 20429:
			return FetchRateLimited, rest.Status
		}
		return FetchUnavailable, rest.Status
	}
	se := Classify(err)
	if se.HTTPStatus == http.StatusTooManyRequests {
		return FetchRateLimited, se.HTTPStatus
	}
	return FetchUnavailable, se.HTTPStatus
}
