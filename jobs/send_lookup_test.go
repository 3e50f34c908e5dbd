package jobs_test

import (
	"net/url"
	"testing"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/testdb"
)

// Two replies with the same words in one conversation, both with an unknown
// outcome: the look-up must not give the older one's Twilio message to the
// newer one. It did: the newer reply recorded the older one's SID without
// being sent, and the older one was then sent a second time (two copies
// under its ?m= id, callbacks that match neither record). Found while
// building the chaos harness, whose offline replies repeat their text.
func TestSendLookupDoesNotTakeAnOlderReplysCopy(t *testing.T) {
	t.Parallel()
	e := newSendEnv(t, envOpts{})
	contact := testdb.PhoneNumber()
	conv := e.conversation(t, e.ten.SMS, contact)
	older := e.outbound(t, conv, "same words")
	newer := e.outbound(t, conv, "same words")

	// The older reply reaches Twilio but the answer is lost; the newer one
	// gets a 500 (nothing created). Callbacks are off: nothing tells us.
	e.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultAcceptThenHang})
	resOlder := e.work(t, e.tx(t), older, nil)
	require.Equal(t, river.EventKindJobFailed, resOlder.EventKind)
	e.fake.Inject(faketwilio.Fault{Kind: faketwilio.FaultServerError})
	resNewer := e.work(t, e.tx(t), newer, nil)
	require.Equal(t, river.EventKindJobFailed, resNewer.EventKind)

	// The newer reply retries first, then the older one.
	require.Equal(t, river.EventKindJobCompleted, e.again(t, resNewer).EventKind)
	require.Equal(t, river.EventKindJobCompleted, e.again(t, resOlder).EventKind)

	perReply := map[string]int{}
	for _, m := range e.fake.Accepted(contact) {
		u, err := url.Parse(m.StatusCallback)
		require.NoError(t, err)
		perReply[u.Query().Get("m")]++
	}
	require.Len(t, e.fake.Accepted(contact), 2, "two replies, two messages: %v", perReply)
	for id, n := range perReply {
		require.Equal(t, 1, n, "reply %s accepted %d times", id, n)
	}
	require.NotEqual(t, *e.message(t, older).TwilioSID, *e.message(t, newer).TwilioSID)
}
