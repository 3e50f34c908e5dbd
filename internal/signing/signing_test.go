package signing_test

import (
	"testing"

	"github.com/conversa/conversa/internal/signing"
)

// The known answer is HMAC-SHA256("key", "The quick brown fox jumps over the
// lazy dog"), as published on Wikipedia's HMAC page.
func TestSignKnownAnswer(t *testing.T) {
	got := signing.Sign("key", []byte("The quick brown fox jumps over the lazy dog"))
	want := "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
	if got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

func TestHeaderVerifiesWithEveryValidSecret(t *testing.T) {
	body := []byte(`{"id":"evt_1"}`)
	h := signing.Header([]string{"new-secret", "old-secret"}, body)
	for _, s := range []string{"new-secret", "old-secret"} {
		if !signing.Verify(h, s, body) {
			t.Errorf("Verify(%q) = false for header %q", s, h)
		}
	}
	if signing.Verify(h, "other", body) {
		t.Error("Verify accepted a secret that did not sign")
	}
	if signing.Verify(h, "new-secret", []byte(`{"id":"evt_2"}`)) {
		t.Error("Verify accepted a different body")
	}
	if one := signing.Header([]string{"new-secret"}, body); one != signing.Sign("new-secret", body) {
		t.Errorf("a single secret's header = %q, want just its signature", one)
	}
}
