package media_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/media"
)

func TestHostRule(t *testing.T) {
	t.Parallel()
	h, err := media.NewHosts("http://127.0.0.1:4010")
	require.NoError(t, err)
	for raw, ok := range map[string]bool{
		"https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1": true,
		"https://mms.twiliocdn.com/AC1/abc":                                     true,
		"https://s3-external-1.amazonaws.com/media.twiliocdn.com/AC1/abc":       true,
		"http://127.0.0.1:9999/any/port":                                        true,
		"http://127.0.0.1/no/port":                                              true,
		"http://api.twilio.com/plain-http":                                      false,
		"https://s3-external-1.amazonaws.com/another-bucket/x":                  false,
		"https://api.twilio.com.evil.example.com/x":                             false,
		"https://eviltwilio.com/x":                                              false,
		"https://user:pw@api.twilio.com/x":                                      false,
		"http://localhost:4010/same-machine-other-name":                         false,
		"ftp://api.twilio.com/x":                                                false,
		"/relative":                                                             false,
	} {
		err := h.Check(raw)
		if ok {
			require.NoError(t, err, raw)
		} else {
			require.ErrorIs(t, err, media.ErrHostRefused, raw)
		}
	}
	// Production: only Twilio's own hosts.
	prod, err := media.NewHosts("https://api.twilio.com")
	require.NoError(t, err)
	require.ErrorIs(t, prod.Check("http://127.0.0.1:9999/x"), media.ErrHostRefused)
}

// fakeEnv is a fake Twilio serving one account's media, and a fetcher on it.
type fakeEnv struct {
	fake       *faketwilio.Fake
	sid, token string
	fetcher    *media.Fetcher
}

func newFakeEnv(t *testing.T, cfg media.Config) *fakeEnv {
	t.Helper()
	f := faketwilio.New(faketwilio.Options{})
	u, err := f.Start()
	require.NoError(t, err)
	t.Cleanup(f.Close)
	e := &fakeEnv{fake: f, sid: "ACmedia", token: "tokmedia"}
	f.AddAccount(e.sid, e.token)
	cfg.TwilioAPIURL = u
	e.fetcher, err = media.NewFetcher(cfg)
	require.NoError(t, err)
	return e
}

func (e *fakeEnv) fetch(t *testing.T, url string) (string, []byte, error) {
	t.Helper()
	d, err := e.fetcher.Open(context.Background(), url, e.sid, e.token, "audio/ogg")
	if err != nil {
		return "", nil, err
	}
	defer d.Close()
	b, err := io.ReadAll(d)
	return d.ContentType, b, err
}

func TestFetchFollowsTwilioRedirectWithBasicAuth(t *testing.T) {
	t.Parallel()
	e := newFakeEnv(t, media.Config{AllowPrivate: true})
	url := e.fake.AddMedia(e.sid, faketwilio.MediaItem{ContentType: "audio/ogg; codecs=opus", Body: []byte("hello there")})
	ct, body, err := e.fetch(t, url)
	require.NoError(t, err)
	require.Equal(t, "audio/ogg; codecs=opus", ct)
	require.Equal(t, "hello there", string(body))
	require.Equal(t, 1, e.fake.MediaFetches(), "the redirect was followed to storage")

	// Twilio's own URL form is fetched at TWILIO_API_URL, as sends are.
	apiForm := "https://api.twilio.com" + strings.TrimPrefix(url, e.fake.URL())
	_, body, err = e.fetch(t, apiForm)
	require.NoError(t, err)
	require.Equal(t, "hello there", string(body))
}

func TestFetchFailuresAreClassified(t *testing.T) {
	t.Parallel()
	e := newFakeEnv(t, media.Config{AllowPrivate: true, MaxBytes: 1000, Timeout: 300 * time.Millisecond})
	big := e.fake.AddMedia(e.sid, faketwilio.MediaItem{ContentType: "audio/ogg", Body: make([]byte, 1001)})
	streamed := e.fake.AddMedia(e.sid, faketwilio.MediaItem{ContentType: "audio/ogg", Size: 1 << 20})
	exact := e.fake.AddMedia(e.sid, faketwilio.MediaItem{ContentType: "audio/ogg", Size: 1000})
	slow := e.fake.AddMedia(e.sid, faketwilio.MediaItem{ContentType: "audio/ogg", Body: []byte("x"), Delay: 5 * time.Second})
	other := e.fake.AddMedia("ACother", faketwilio.MediaItem{ContentType: "audio/ogg", Body: []byte("x")})
	missing := e.fake.URL() + "/2010-04-01/Accounts/" + e.sid + "/Messages/MM1/Media/MEnone"

	for name, c := range map[string]struct {
		url   string
		class media.Class
	}{
		"not found":                {missing, media.ClassNotFound},
		"another account's media":  {other, media.ClassUnauthorized},
		"over the limit, declared": {big, media.ClassTooLarge},
		"over the limit, streamed": {streamed, media.ClassTooLarge},
		"slow host":                {slow, media.ClassTimeout},
		"off Twilio's hosts":       {"https://evil.example.com/x", media.ClassHostRefused},
	} {
		_, _, err := e.fetch(t, c.url)
		require.Error(t, err, name)
		require.Equal(t, c.class, media.ClassOf(err), "%s: %v", name, err)
	}
	_, body, err := e.fetch(t, exact)
	require.NoError(t, err, "exactly MEDIA_MAX_BYTES is allowed")
	require.Len(t, body, 1000)
}

func TestFetchAppliesTheHostRuleOnEveryHop(t *testing.T) {
	t.Parallel()
	e := newFakeEnv(t, media.Config{AllowPrivate: true})
	url := e.fake.AddMedia(e.sid, faketwilio.MediaItem{ContentType: "image/png", Body: []byte("png")})
	// The same machine under another name: not TWILIO_API_URL's host name.
	e.fake.SetMediaRedirect(strings.Replace(e.fake.URL(), "127.0.0.1", "localhost", 1))
	_, _, err := e.fetch(t, url)
	require.Equal(t, media.ClassHostRefused, media.ClassOf(err), "%v", err)
	require.Zero(t, e.fake.MediaFetches(), "storage was never reached")
}

func TestFetchRefusesPrivateAddressesUnlessAllowed(t *testing.T) {
	t.Parallel()
	e := newFakeEnv(t, media.Config{})
	url := e.fake.AddMedia(e.sid, faketwilio.MediaItem{ContentType: "image/png", Body: []byte("png")})
	_, _, err := e.fetch(t, url)
	require.Equal(t, media.ClassHostRefused, media.ClassOf(err), "%v", err)
	var me *media.Error
	require.True(t, errors.As(err, &me))
}

func TestKindOf(t *testing.T) {
	t.Parallel()
	require.Equal(t, media.KindAudio, media.KindOf("audio/ogg; codecs=opus"))
	require.Equal(t, media.KindAudio, media.KindOf("AUDIO/AMR"))
	require.Equal(t, media.KindImage, media.KindOf("image/jpeg"))
	require.Equal(t, media.KindOther, media.KindOf("application/pdf"))
	require.Equal(t, media.KindOther, media.KindOf(""))
}
