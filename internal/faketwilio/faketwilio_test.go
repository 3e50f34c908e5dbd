package faketwilio_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twilio/twilio-go/client"

	"github.com/conversa/conversa/internal/faketwilio"
)

const (
	sid   = "AC0123456789abcdef0123456789abcdef"
	token = "secrettoken123"
)

func start(t *testing.T, opts faketwilio.Options) *faketwilio.Fake {
	t.Helper()
	f := faketwilio.New(opts)
	_, err := f.Start()
	require.NoError(t, err)
	t.Cleanup(f.Close)
	f.AddAccount(sid, token)
	return f
}

func do(t *testing.T, f *faketwilio.Fake, method, path, user, pass string, form url.Values) (int, map[string]any) {
	t.Helper()
	var body *strings.Reader
	if method == http.MethodPost {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
		path += "?" + form.Encode()
	}
	req, err := http.NewRequest(method, f.URL()+path, body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out
}

const messages = "/2010-04-01/Accounts/" + sid + "/Messages.json"

func TestFakeValidatesLikeTwilio(t *testing.T) {
	t.Parallel()
	f := start(t, faketwilio.Options{NoCallbacks: true})
	ok := url.Values{"To": {"+15005550006"}, "From": {"+15005550001"}, "Body": {"hi"}}
	for _, tc := range []struct {
		name         string
		user, pass   string
		drop         string
		status, code int
	}{
		{"wrong token", sid, "nope", "", 401, 20003},
		{"no To", sid, token, "To", 400, 21604},
		{"no From", sid, token, "From", 400, 21603},
		{"no Body", sid, token, "Body", 400, 21602},
	} {
		form := url.Values{}
		for k, v := range ok {
			if k != tc.drop {
				form[k] = v
			}
		}
		status, body := do(t, f, http.MethodPost, messages, tc.user, tc.pass, form)
		require.Equal(t, tc.status, status, tc.name)
		require.EqualValues(t, tc.code, body["code"], tc.name)
		require.EqualValues(t, tc.status, body["status"], tc.name)
		require.NotEmpty(t, body["message"], tc.name)
		require.Contains(t, body["more_info"], "twilio.com/docs/errors/", tc.name)
	}
	require.Empty(t, f.Accepted(""))
}

func TestFakeCreatesListsAndFetches(t *testing.T) {
	t.Parallel()
	f := start(t, faketwilio.Options{NoCallbacks: true})
	status, created := do(t, f, http.MethodPost, messages, sid, token,
		url.Values{"To": {"+15005550006"}, "From": {"+15005550001"}, "Body": {"hi"}})
	require.Equal(t, http.StatusCreated, status)
	require.Equal(t, "queued", created["status"])
	msgSID, _ := created["sid"].(string)
	require.True(t, strings.HasPrefix(msgSID, "SM"))
	do(t, f, http.MethodPost, messages, sid, token, url.Values{"To": {"+15005550007"}, "From": {"+15005550001"}, "Body": {"other"}})

	status, list := do(t, f, http.MethodGet, messages, sid, token, url.Values{"To": {"+15005550006"}})
	require.Equal(t, http.StatusOK, status)
	got, _ := list["messages"].([]any)
	require.Len(t, got, 1)
	require.Equal(t, msgSID, got[0].(map[string]any)["sid"])
	require.Contains(t, list, "next_page_uri")

	status, one := do(t, f, http.MethodGet, "/2010-04-01/Accounts/"+sid+"/Messages/"+msgSID+".json", sid, token, nil)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "hi", one["body"])
	status, missing := do(t, f, http.MethodGet, "/2010-04-01/Accounts/"+sid+"/Messages/SMnope.json", sid, token, nil)
	require.Equal(t, http.StatusNotFound, status)
	require.EqualValues(t, 20404, missing["code"])
}

func TestFakePostsSignedStatusCallbacksInOrder(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var statuses []string
	done := make(chan struct{})
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		params := map[string]string{}
		for k, v := range r.PostForm {
			params[k] = v[0]
		}
		v := client.NewRequestValidator(token)
		if !v.Validate(srv.URL+r.URL.RequestURI(), params, r.Header.Get("X-Twilio-Signature")) {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		statuses = append(statuses, r.PostForm.Get("MessageStatus"))
		if len(statuses) == 3 {
			close(done)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	f := start(t, faketwilio.Options{CallbackDelay: time.Millisecond})
	status, _ := do(t, f, http.MethodPost, messages, sid, token, url.Values{
		"To": {"+15005550006"}, "From": {"+15005550001"}, "Body": {"hi"}, "StatusCallback": {srv.URL + "/twilio/status?m=42"},
	})
	require.Equal(t, http.StatusCreated, status)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("callbacks did not arrive")
	}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"queued", "sent", "delivered"}, statuses)
}
