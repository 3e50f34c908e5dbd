// Package egress is the one rule for HTTP requests Conversa makes to URLs a
// tenant chose (tool endpoints, event webhooks) and to media: which addresses
// may be reached, and that redirects are never followed blindly.
//
// A tenant-supplied URL must not make Conversa probe a private network: a URL
// is checked when it is saved (CheckURL) and, because a public name can
// resolve to a private address, again on the address actually dialled
// (Dialer). Both are relaxed by TOOLS_ALLOW_PRIVATE=1, which local runs and
// tests need.
//
// It imports only the standard library.
package egress

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is a URL or an address that may not be reached.
var ErrRefused = errors.New("address refused")

// PublicAddr reports whether a is a public unicast address: not loopback,
// private, link-local, shared (CGNAT), multicast or unspecified.
func PublicAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && a.IsGlobalUnicast() && !a.IsPrivate() && !a.IsLoopback() &&
		!a.IsLinkLocalUnicast() && !cgnat.Contains(a)
}

// cgnat is the shared address space (RFC 6598), private in practice.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// CheckURL reports whether raw is an absolute http(s) URL without
// credentials whose host is not, on its face, loopback or private (a literal
// address, "localhost"). Names are checked again when dialled. The error
// wraps ErrRefused and says what is wrong, fit for a 400's message.
func CheckURL(raw string, allowPrivate bool) error {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || !u.IsAbs() || u.Hostname() == "" {
		return fmt.Errorf("%w: not an absolute URL", ErrRefused)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: scheme must be http or https", ErrRefused)
	}
	if u.User != nil {
		return fmt.Errorf("%w: URL must not carry credentials", ErrRefused)
	}
	if allowPrivate {
		return nil
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return fmt.Errorf("%w: loopback host (allowed only with TOOLS_ALLOW_PRIVATE=1)", ErrRefused)
	}
	if a, err := netip.ParseAddr(host); err == nil && !PublicAddr(a) {
		return fmt.Errorf("%w: private or loopback address (allowed only with TOOLS_ALLOW_PRIVATE=1)", ErrRefused)
	}
	return nil
}

// Dialer returns a dialer that, unless allowPrivate, refuses every address
// that is not public — checked after DNS, on the address really dialled.
func Dialer(allowPrivate bool) *net.Dialer {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if !allowPrivate {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !PublicAddr(ap.Addr()) {
				return fmt.Errorf("%w: %s is not a public address", ErrRefused, address)
			}
			return nil
		}
	}
	return d
}

// Options configures NewClient.
type Options struct {
	// AllowPrivate admits loopback and private addresses (TOOLS_ALLOW_PRIVATE).
	AllowPrivate bool
	// Timeout bounds a whole request, body included (0 = 10 s).
	Timeout time.Duration
}

// NewTransport is the transport every egress client uses: no proxy (the
// address rule must apply to the host really reached) and Dialer's rule.
func NewTransport(allowPrivate bool, headerTimeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           Dialer(allowPrivate).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: headerTimeout,
	}
}

// NewClient returns a client for tenant-chosen URLs: the address rule, a
// whole-request timeout, and redirects never followed — a 3xx comes back as
// the response, for the caller to treat as a failure.
func NewClient(o Options) *http.Client {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	return &http.Client{
		Transport: NewTransport(o.AllowPrivate, o.Timeout),
		Timeout:   o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
