// Package faketool is a recording HTTP tool endpoint, the business's side of
// an agent's HTTP tool (docs/tools.md): it records every request Conversa
// makes (body, Idempotency-Key, X-Conversa-Signature) and answers what the
// test says, faults included (slow, 5xx, not JSON). It dedupes nothing: a
// test sees every POST, so it can count repeated calls.
package faketool

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Request is one request the endpoint got.
type Request struct {
	Path           string
	Body           []byte
	ContentType    string
	IdempotencyKey string
	Signature      string
}

// Response is what the endpoint answers.
type Response struct {
	Status      int // 0 = 200
	ContentType string
	Body        string
	// Delay holds the answer back (past the caller's timeout, a timeout).
	Delay time.Duration
}

// Server is a running endpoint.
type Server struct {
	srv    *http.Server
	url    string
	closed chan struct{}

	mu      sync.Mutex
	reqs    []Request
	respond func(n int, r Request) Response
}

// Start serves an endpoint on 127.0.0.1 on a free port; by default every
// request gets 200 {"ok": true}.
func Start() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake tool: listen: %w", err)
	}
	s := &Server{url: "http://" + ln.Addr().String(), closed: make(chan struct{})}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the endpoint's base URL; any path is served.
func (s *Server) URL() string { return s.url }

// Respond sets the answer to the nth request (from 1) and later ones.
func (s *Server) Respond(f func(n int, r Request) Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.respond = f
}

// Requests returns the requests so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Close stops the endpoint; delayed answers are released.
func (s *Server) Close() {
	select {
	case <-s.closed:
		return
	default:
		close(s.closed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	req := Request{Path: r.URL.Path, Body: body, ContentType: r.Header.Get("Content-Type"),
		IdempotencyKey: r.Header.Get("Idempotency-Key"), Signature: r.Header.Get("X-Conversa-Signature")}
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	n, respond := len(s.reqs), s.respond
	s.mu.Unlock()
	res := Response{ContentType: "application/json", Body: `{"ok": true}`}
	if respond != nil {
		res = respond(n, req)
	}
	if res.Delay > 0 {
		t := time.NewTimer(res.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-s.closed:
			return
		}
	}
	if res.ContentType != "" {
		w.Header().Set("Content-Type", res.ContentType)
	}
	status := res.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, res.Body)
}
