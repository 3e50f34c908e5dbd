package twilio_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"

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
		{"html 502", fmt.Errorf("error decoding the response for an HTTP error code: 502: invalid character '<'"), twilio.ClassAmbiguous, "unreadable_error_body"},
		{"html 429", fmt.Errorf("error decoding the response for an HTTP error code: 429: invalid character '<'"), twilio.ClassRetry, "too_many_requests"},
		{"context", context.DeadlineExceeded, twilio.ClassAmbiguous, "unknown_outcome"},
	} {
		se := twilio.Classify(tc.err)
		require.Equal(t, tc.class, se.Class, tc.name)
		require.Equal(t, tc.reason, se.Reason, tc.name)
		require.NotContains(t, se.Error(), "+1555", "%s: no phone numbers in job errors", tc.name)
	}
}
