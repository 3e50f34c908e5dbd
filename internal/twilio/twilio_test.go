package twilio_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twilio/twilio-go/client"

	"github.com/conversa/conversa/internal/twilio"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "Client.Timeout exceeded while awaiting headers" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	t.Parallel()
	rest := func(status, code int) error {
		return fmt.Errorf("create: %w", &client.TwilioRestError{Status: status, Code: code, Message: "to +15550001111"})
	}
	urlErr := func(err error) error { return &url.Error{Op: "Post", URL: "https://api.twilio.com/x", Err: err} }
	for _, tc := range []struct {
		name   string
		err    error
		class  string
		reason string
	}{
		{"429", rest(429, 20429), twilio.ClassRetry, "too_many_requests"},
		{"sender queue full", rest(400, 21611), twilio.ClassRetry, "sender_queue_full"},
		{"queue overflow", rest(400, 30001), twilio.ClassRetry, "queue_overflow"},
		{"account MPS", rest(429, 63017), twilio.ClassRetry, "account_rate_limit"},
		{"channel rate", rest(429, 63018), twilio.ClassRetry, "channel_rate_limit"},
		{"daily limit", rest(429, 63038), twilio.ClassRetry, "daily_limit"},
		{"unsubscribed", rest(400, 21610), twilio.ClassPermanent, "unsubscribed"},
		{"landline", rest(400, 21635), twilio.ClassPermanent, "landline"},
		{"blocked", rest(400, 63014), twilio.ClassPermanent, "blocked_by_user"},
		{"unknown 4xx", rest(400, 21999), twilio.ClassPermanent, "twilio_error_21999"},
		{"500 json", rest(500, 20500), twilio.ClassAmbiguous, "twilio_server_error"},
		{"503 json", rest(503, 0), twilio.ClassAmbiguous, "twilio_server_error"},
		{"timeout", urlErr(timeoutErr{}), twilio.ClassAmbiguous, "timeout"},
		{"refused", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), twilio.ClassRetry, "connection_refused"},
		{"reset after write", urlErr(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), twilio.ClassAmbiguous, "connection_lost"},
		{"EOF", urlErr(fmt.Errorf("EOF")), twilio.ClassAmbiguous, "connection_lost"},
		{"context", context.DeadlineExceeded, twilio.ClassAmbiguous, "unknown_outcome"},
	} {
		se := twilio.Classify(tc.err)
		require.Equal(t, tc.class, se.Class, tc.name)
		require.Equal(t, tc.reason, se.Reason, tc.name)
		require.NotContains(t, se.Error(), "+1555", "%s: no phone numbers in job errors", tc.name)
	}
}

// TestClassifyAnswersTwilioGoCannotRead sends through the real client to a
// server that answers like a proxy in front of Twilio (an HTML page, or a
// body cut off) and like Twilio itself (its JSON error): the class comes from
// the HTTP status or Twilio's code, never from an error's text.
func TestClassifyAnswersTwilioGoCannotRead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		status      int
		contentType string
		body        string
		class       string
		reason      string
		fetchClass  string
	}{
		{"html 502", 502, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>", twilio.ClassAmbiguous, "unreadable_error_body", twilio.FetchUnavailable},
		{"html 429", 429, "text/html", "<html>slow down</html>", twilio.ClassRetry, "too_many_requests", twilio.FetchRateLimited},
		{"empty 503", 503, "text/plain", "", twilio.ClassAmbiguous, "unreadable_error_body", twilio.FetchUnavailable},
		{"cut-off json 500", 500, "application/json", `{"code": 20500, "mess`, twilio.ClassAmbiguous, "unreadable_error_body", twilio.FetchUnavailable},
		{"json 429", 429, "application/json", `{"code": 20429, "message": "Too Many Requests to +15550001111", "status": 429}`, twilio.ClassRetry, "too_many_requests", twilio.FetchRateLimited},
		{"json 400", 400, "application/json", `{"code": 21211, "message": "Invalid 'To' Phone Number: +15550001111", "status": 400}`, twilio.ClassPermanent, "invalid_to", twilio.FetchUnavailable},
		{"html 404 fetch", 404, "text/html", "<html>not here</html>", twilio.ClassAmbiguous, "unreadable_error_body", twilio.FetchUnavailable},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", tc.contentType)
			w.WriteHeader(tc.status)
			_, _ = w.Write([]byte(tc.body))
		}))
		t.Cleanup(srv.Close)
		c, err := twilio.New(srv.URL, 5*time.Second)
		require.NoError(t, err)

		_, _, err = c.Send(twilio.Outgoing{AccountSID: "AC" + strings.Repeat("0", 32), AuthToken: "tok",
			From: "+15005550006", To: "+15550001111", Body: "hi", StatusCallback: "https://example.com/twilio/status?m=1"})
		require.Error(t, err, tc.name)
		se := twilio.Classify(err)
		require.Equal(t, tc.class, se.Class, tc.name)
		require.Equal(t, tc.reason, se.Reason, tc.name)
		require.Equal(t, tc.status, se.HTTPStatus, tc.name)
		require.NotContains(t, se.Error(), "+1555", "%s: no phone numbers in job errors", tc.name)

		_, err = c.Fetch("AC"+strings.Repeat("0", 32), "tok", "SM1")
		require.Error(t, err, tc.name)
		class, status := twilio.ClassifyFetch(err)
		require.Equal(t, tc.fetchClass, class, tc.name)
		require.Equal(t, tc.status, status, tc.name)
	}
}
