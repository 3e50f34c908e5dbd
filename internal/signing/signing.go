// Package signing is how Conversa signs what it sends to a tenant's own
// systems (tool calls, event webhooks): X-Conversa-Signature carries
// "sha256=<hex HMAC-SHA256 of the exact body>", keyed with the tenant's
// signing secret's text as UTF-8 bytes. While a rotated-out secret is still
// valid (24 h), the header carries one signature per valid secret, newest
// first, separated by commas, so a receiver verifying with either secret
// succeeds — the same scheme as Stripe's.
//
// It imports only the standard library.
package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// HeaderName is the header the signature travels in.
const HeaderName = "X-Conversa-Signature"

const prefix = "sha256="

// Sign returns "sha256=<hex HMAC-SHA256 of body keyed with secret>".
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return prefix + hex.EncodeToString(m.Sum(nil))
}

// Header returns the X-Conversa-Signature value for body: one signature per
// valid secret, newest first, comma-separated.
func Header(secrets []string, body []byte) string {
	sigs := make([]string, len(secrets))
	for i, s := range secrets {
		sigs[i] = Sign(s, body)
	}
	return strings.Join(sigs, ",")
}

// Verify reports whether header holds a signature of body made with secret,
// comparing in constant time. It is what a receiver does; Conversa's tests
// and the README's example use it.
func Verify(header, secret string, body []byte) bool {
	want := []byte(Sign(secret, body))
	ok := false
	for _, sig := range strings.Split(header, ",") {
		if hmac.Equal([]byte(strings.TrimSpace(sig)), want) {
			ok = true
		}
	}
	return ok
}
