package egress_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/conversa/conversa/internal/egress"
)

func TestCheckURL(t *testing.T) {
	cases := []struct {
		url          string
		allowPrivate bool
		ok           bool
	}{
		{"https://example.com/hook", false, true},
		{"http://example.com:8080/hook", false, true},
		{"ftp://example.com/x", false, false},
		{"example.com/hook", false, false},
		{"https://user:pw@example.com/", false, false},
		{"http://127.0.0.1:9000/", false, false},
		{"http://127.0.0.1:9000/", true, true},
		{"http://localhost/", false, false},
		{"http://LOCALHOST./", false, false},
		{"http://10.1.2.3/", false, false},
		{"http://[::1]/", false, false},
		{"http://169.254.169.254/latest/meta-data", false, false},
		{"http://100.64.0.1/", false, false},
		{"https://8.8.8.8/", false, true},
		{"", false, false},
	}
	for _, c := range cases {
		err := egress.CheckURL(c.url, c.allowPrivate)
		if (err == nil) != c.ok {
			t.Errorf("CheckURL(%q, %v) = %v, want ok=%v", c.url, c.allowPrivate, err, c.ok)
		}
		if err != nil && !errors.Is(err, egress.ErrRefused) {
			t.Errorf("CheckURL(%q): %v does not wrap ErrRefused", c.url, err)
		}
	}
}

func TestPublicAddr(t *testing.T) {
	for s, want := range map[string]bool{
		"8.8.8.8": true, "2001:4860:4860::8888": true, "::ffff:127.0.0.1": false,
		"192.168.1.1": false, "0.0.0.0": false, "fe80::1": false, "224.0.0.1": false,
	} {
		if got := egress.PublicAddr(netip.MustParseAddr(s)); got != want {
			t.Errorf("PublicAddr(%s) = %v, want %v", s, got, want)
		}
	}
}

// The dial rule holds after DNS: a loopback server is refused unless
// private addresses are allowed.
func TestClientRefusesPrivateUnlessAllowed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()

	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
	_, err := egress.NewClient(egress.Options{}).Do(req)
	if !errors.Is(err, egress.ErrRefused) {
		t.Fatalf("private dial: err = %v, want ErrRefused", err)
	}
	resp, err := egress.NewClient(egress.Options{AllowPrivate: true}).Do(req)
	if err != nil {
		t.Fatalf("allowed dial: %v", err)
	}
	resp.Body.Close()
}

// A redirect comes back as the answer; its target is never requested.
func TestClientNeverFollowsRedirects(t *testing.T) {
	followed := false
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { followed = true }))
	defer target.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	defer srv.Close()

	resp, err := egress.NewClient(egress.Options{AllowPrivate: true}).Post(srv.URL, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || followed {
		t.Fatalf("status %d, followed %v; want the 307 itself and no request to its target", resp.StatusCode, followed)
	}
}
