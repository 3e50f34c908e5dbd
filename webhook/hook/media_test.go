package hook_test

import (
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/media"
	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

// mediaEdge is the edge of a deployment whose TWILIO_API_URL is on 127.0.0.1.
func mediaEdge(t *testing.T) http.Handler {
	t.Helper()
	pool := testdb.Pool(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	require.NoError(t, err)
	hosts, err := media.NewHosts("http://127.0.0.1:4010")
	require.NoError(t, err)
	return webhook.NewHandler(webhook.Deps{
		DB: pool, River: rc, Sealer: testdb.Sealer(t),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), PublicBaseURL: edgetest.BaseURL, MediaHosts: hosts,
	})
}

func TestInboundMediaStoredWithItsURLAndType(t *testing.T) {
	t.Parallel()
	h := mediaEdge(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 5)
	form := edgetest.InboundForm(ten, "whatsapp:"+testdb.PhoneNumber(), "")
	form.Set("NumMedia", "2")
	form.Set("MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/"+ten.AccountSID+"/Messages/MM1/Media/ME1")
	form.Set("MediaContentType0", "audio/ogg; codecs=opus")
	form.Set("MediaUrl1", "http://127.0.0.1:9999/2010-04-01/Accounts/"+ten.AccountSID+"/Messages/MM1/Media/ME2")
	form.Set("MediaContentType1", "image/jpeg")
	rec := edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, form)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())

	var got []store.Media
	require.NoError(t, testdb.Pool(t).QueryRow(t.Context(),
		`SELECT media FROM messages WHERE tenant_id = $1`, ten.ID).Scan(&got))
	require.Equal(t, []store.Media{
		{URL: form.Get("MediaUrl0"), ContentType: "audio/ogg; codecs=opus"},
		{URL: form.Get("MediaUrl1"), ContentType: "image/jpeg"},
	}, got)
}

func TestInboundMediaBadInputRefusedAndNothingStored(t *testing.T) {
	t.Parallel()
	h := mediaEdge(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 5)
	twilioURL := "https://api.twilio.com/2010-04-01/Accounts/" + ten.AccountSID + "/Messages/MM1/Media/ME1"
	cases := map[string]map[string]string{
		"NumMedia above the URLs":      {"NumMedia": "2", "MediaUrl0": twilioURL},
		"URL beyond NumMedia":          {"NumMedia": "1", "MediaUrl0": twilioURL, "MediaUrl1": twilioURL},
		"URL with NumMedia 0":          {"NumMedia": "0", "MediaUrl0": twilioURL},
		"NumMedia not a number":        {"NumMedia": "two", "MediaUrl0": twilioURL},
		"NumMedia over Twilio's limit": {"NumMedia": "11"},
		"another host":                 {"NumMedia": "1", "MediaUrl0": "https://evil.example.com/x.ogg"},
		"a look-alike host":            {"NumMedia": "1", "MediaUrl0": "https://api.twilio.com.evil.example.com/x"},
		"Twilio over plain http":       {"NumMedia": "1", "MediaUrl0": "http://api.twilio.com/x"},
		"credentials in the URL":       {"NumMedia": "1", "MediaUrl0": "https://user:pw@api.twilio.com/x"},
		"a private address":            {"NumMedia": "1", "MediaUrl0": "http://169.254.169.254/latest/meta-data"},
		"not a URL":                    {"NumMedia": "1", "MediaUrl0": "::not a url"},
	}
	for name, fields := range cases {
		t.Run(name, func(t *testing.T) {
			form := edgetest.InboundForm(ten, "whatsapp:"+testdb.PhoneNumber(), "hi")
			for k, v := range fields {
				form.Set(k, v)
			}
			rec := edgetest.Post(t, h, "/twilio/inbound", ten.AuthToken, form)
			require.Equal(t, http.StatusBadRequest, rec.Code, "signed, but still refused")
		})
	}
	msgs, jobsN := counts(t, ten.ID)
	require.Zero(t, msgs)
	require.Zero(t, jobsN)

	// Unsigned, a forged webhook never gets as far as the host rule.
	form := edgetest.InboundForm(ten, "whatsapp:"+testdb.PhoneNumber(), "hi")
	form.Set("NumMedia", "1")
	form.Set("MediaUrl0", "https://evil.example.com/x.ogg")
	rec := edgetest.Post(t, h, "/twilio/inbound", "not-the-token", form)
	require.Equal(t, http.StatusForbidden, rec.Code)
}
