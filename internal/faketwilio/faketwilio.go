// Package faketwilio is a fake of Twilio's Messages API (2010-04-01) that
// behaves like the real one: Basic auth, the same required fields and error
// body shape, 201 with an SM... SID, list and fetch, and signed status
// callbacks (queued → sent → delivered), a share of which it can lose
// (CallbackLoss) while the message's status moves on, as a fetch shows.
// Faults can be injected: error codes,
// 429, 5xx (JSON or an HTML proxy page), hangs before accepting, and "accepted
// but the response was lost". Every accepted message is recorded with its
// server-side time, so tests can assert that one message was never accepted
// twice, and check pacing.
//
// It is also the sandbox Twilio (TWILIO_API_URL=sandbox): see StartSandbox.
package faketwilio

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/conversa/conversa/internal/twilio/signature"
)

// FaultKind is what an injected fault does to a send.
type FaultKind int

const (
	// FaultError answers with a Twilio error (Code, Status) and creates nothing.
	FaultError FaultKind = iota + 1
	// FaultRateLimit answers 429 with code 20429 and creates nothing.
	FaultRateLimit
	// FaultServerError answers 500 with a Twilio JSON error body; nothing is created.
	FaultServerError
	// FaultBadGateway answers 502 with an HTML page (a proxy's), not JSON; nothing is created.
	FaultBadGateway
	// FaultHang holds the request until the client gives up, and creates nothing.
	FaultHang
	// FaultAcceptThenHang creates the message, then holds the response until
	// the client gives up: the send happened, but the client cannot know.
	FaultAcceptThenHang
	// FaultAcceptThenDrop creates the message, then closes the connection
	// without answering.
	FaultAcceptThenDrop
	// FaultUndelivered accepts the message; its callbacks end "undelivered"
	// with Code (30003 when zero).
	FaultUndelivered
	// FaultNoFinalStatus accepts the message, which then stays "sent" for
	// good (a carrier that never reports delivery).
	FaultNoFinalStatus
)

// Fault is one injected fault. It applies to the next Times sends (1 when
// zero) whose To matches (any To when empty).
type Fault struct {
	Kind   FaultKind
	To     string
	Times  int
	Code   int
	Status int
}

// Message is one message the fake accepted.
type Message struct {
	SID              string
	AccountSID       string
	From             string
	To               string
	Body             string
	MediaURLs        []string
	ContentSID       string
	ContentVariables string
	StatusCallback   string
	Status           string
	ErrorCode        int
	// Created is the server-side time the message was accepted.
	Created time.Time
	// Sent is when it went to "sent" (zero before).
	Sent time.Time
}

// Options configure a Fake.
type Options struct {
	// AnyAccount accepts any account SID and token (the sandbox); otherwise
	// only accounts added with AddAccount authenticate.
	AnyAccount bool
	// CallbackDelay is the pause before each status callback (10 ms when zero).
	CallbackDelay time.Duration
	// NoCallbacks turns status callbacks off.
	NoCallbacks bool
	// CallbackLoss is the chance (0..1) that one status callback is never
	// posted, as when Twilio gives up on an unreachable endpoint. The
	// message's status at the fake moves on all the same.
	CallbackLoss float64
	// HangFor bounds how long a hanging fault holds a request whose client
	// does not give up (30 s when zero).
	HangFor time.Duration
	// Logger may be nil. It never logs bodies, numbers or tokens.
	Logger *slog.Logger
	// Now is the fake's clock; nil means time.Now.
	Now func() time.Time
	// Chance, when set, is asked for a fault for each send that no injected
	// fault matched (nil for none): probabilistic faults for chaos runs. It
	// is called with the fake's lock held, so it must not call the fake.
	Chance func(to string) *Fault
}

// callbackTimeout is how long a status callback may take, as at Twilio:
// 15 s in all, after which the callback is dropped, never retried. (It was
// 5 s, which failed callbacks a loaded machine answered in 5 to 15 s, in a
// way Twilio would not.)
const callbackTimeout = 15 * time.Second

// Fake is a fake Twilio Messages API; it is an http.Handler.
type Fake struct {
	opts   Options
	client *http.Client

	mu       sync.Mutex
	accounts map[string]string // sid -> token
	messages []*Message        // in acceptance order
	faults   []*Fault
	requests int
	media    mediaStore // media.go
	fetches  int
	lost     int
	rng      *mrand.Rand

	wg     sync.WaitGroup
	srv    *http.Server
	url    string
	closed chan struct{}
}

// New returns a Fake; serve it with Start, or mount it as an http.Handler.
func New(opts Options) *Fake {
	if opts.CallbackDelay == 0 {
		opts.CallbackDelay = 10 * time.Millisecond
	}
	if opts.HangFor == 0 {
		opts.HangFor = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Fake{
		opts:     opts,
		client:   &http.Client{Timeout: callbackTimeout},
		accounts: map[string]string{},
		closed:   make(chan struct{}),
		rng:      mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 0x5eed)),
	}
}

// Start serves the fake on 127.0.0.1 on a free port and returns its base URL
// (what TWILIO_API_URL would be).
func (f *Fake) Start() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("fake twilio: listen: %w", err)
	}
	f.srv = &http.Server{Handler: f, ReadHeaderTimeout: 5 * time.Second}
	f.url = "http://" + ln.Addr().String()
	go func() { _ = f.srv.Serve(ln) }()
	return f.url, nil
}

// URL is the base URL Start returned.
func (f *Fake) URL() string { return f.url }

// Close stops the server and waits for pending status callbacks to stop.
func (f *Fake) Close() {
	select {
	case <-f.closed:
		return
	default:
		close(f.closed)
	}
	if f.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = f.srv.Shutdown(ctx)
		_ = f.srv.Close()
	}
	f.wg.Wait()
}

// StartSandbox starts the sandbox Twilio: a Fake that accepts any
// account, on 127.0.0.1 on a free port, stopped when ctx ends. It returns the
// base URL to use as TWILIO_API_URL.
func StartSandbox(ctx context.Context, logger *slog.Logger) (string, error) {
	f := New(Options{AnyAccount: true, CallbackDelay: 200 * time.Millisecond, Logger: logger})
	u, err := f.Start()
	if err != nil {
		return "", err
	}
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	return u, nil
}

// AddAccount lets an account authenticate with its token.
func (f *Fake) AddAccount(sid, token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accounts[sid] = token
}

// Inject adds a fault for the next matching sends.
func (f *Fake) Inject(fault Fault) {
	if fault.Times == 0 {
		fault.Times = 1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &fault)
}

// Accepted returns copies of the accepted messages to To (all when To is
// empty), in acceptance order.
func (f *Fake) Accepted(to string) []Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Message
	for _, m := range f.messages {
		if to == "" || m.To == to {
			c := *m
			c.MediaURLs = slices.Clone(m.MediaURLs)
			out = append(out, c)
		}
	}
	return out
}

// Requests is how many create requests the fake has seen, faulted or not.
func (f *Fake) Requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// Fetches is how many single-message look-ups (GET .../Messages/{Sid}.json)
// the fake has answered, found or not.
func (f *Fake) Fetches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches
}

// LostCallbacks is how many status callbacks CallbackLoss dropped.
func (f *Fake) LostCallbacks() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lost
}

// Delete removes an accepted message, as an account owner can at Twilio:
// a fetch of it then answers 404.
func (f *Fake) Delete(sid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.messages = slices.DeleteFunc(f.messages, func(m *Message) bool { return m.SID == sid })
}

// apiError is Twilio's error body.
type apiError struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apiError{
		Code: code, Message: msg, MoreInfo: fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), Status: status,
	})
}

// ServeHTTP routes the 2010-04-01 Messages endpoints.
func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.serveMedia(w, r) {
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/2010-04-01/Accounts/")
	if !ok {
		writeError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
		return
	}
	sid, resource, _ := strings.Cut(rest, "/")
	token, ok := f.authenticate(r, sid)
	if !ok {
		writeError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	switch {
	case resource == "Messages.json" && r.Method == http.MethodPost:
		f.create(w, r, sid, token)
	case resource == "Messages.json" && r.Method == http.MethodGet:
		f.list(w, r, sid)
	case strings.HasPrefix(resource, "Messages/") && strings.HasSuffix(resource, ".json") && r.Method == http.MethodGet:
		f.fetch(w, sid, strings.TrimSuffix(strings.TrimPrefix(resource, "Messages/"), ".json"))
	default:
		writeError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
	}
}

// authenticate checks Basic auth against the path's account and returns the
// token (which signs the account's callbacks).
func (f *Fake) authenticate(r *http.Request, pathSID string) (string, bool) {
	user, pass, ok := r.BasicAuth()
	if !ok || user == "" || user != pathSID {
		return "", false
	}
	if f.opts.AnyAccount {
		return pass, pass != ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	tok, known := f.accounts[user]
	return tok, known && hmac.Equal([]byte(tok), []byte(pass))
}

// takeFault returns the first fault matching to and uses it once.
func (f *Fake) takeFault(to string) *Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	for i, ft := range f.faults {
		if ft.To == "" || ft.To == to {
			ft.Times--
			if ft.Times <= 0 {
				f.faults = slices.Delete(f.faults, i, i+1)
			}
			c := *ft
			return &c
		}
	}
	if f.opts.Chance != nil {
		return f.opts.Chance(to)
	}
	return nil
}

func validAddress(a string) bool {
	a = strings.TrimPrefix(a, "whatsapp:")
	if len(a) < 8 || a[0] != '+' {
		return false
	}
	for _, c := range a[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (f *Fake) create(w http.ResponseWriter, r *http.Request, accountSID, token string) {
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, 20001, "Invalid form body")
		return
	}
	form := r.PostForm
	to, from, mss := form.Get("To"), form.Get("From"), form.Get("MessagingServiceSid")
	body, contentSID, media := form.Get("Body"), form.Get("ContentSid"), form["MediaUrl"]
	switch {
	case to == "":
		writeError(w, http.StatusBadRequest, 21604, "A 'To' phone number is required.")
		return
	case from == "" && mss == "":
		writeError(w, http.StatusBadRequest, 21603, "A 'From' phone number is required.")
		return
	case body == "" && len(media) == 0 && contentSID == "":
		writeError(w, http.StatusBadRequest, 21602, "Message body is required.")
		return
	case !validAddress(to):
		writeError(w, http.StatusBadRequest, 21211, "Invalid 'To' Phone Number: "+to)
		return
	case from != "" && !validAddress(from):
		writeError(w, http.StatusBadRequest, 21212, "Invalid 'From' Phone Number: "+from)
		return
	case from != "" && strings.HasPrefix(from, "whatsapp:") != strings.HasPrefix(to, "whatsapp:"):
		writeError(w, http.StatusBadRequest, 21910, "Invalid From and To pair. From and To should be of the same channel")
		return
	case len([]rune(body)) > 1600 && !strings.HasPrefix(to, "whatsapp:"):
		writeError(w, http.StatusBadRequest, 21617, "The concatenated message body exceeds the 1600 character limit.")
		return
	}

	fault := f.takeFault(to)
	var finalStatus string
	var finalCode int
	if fault != nil {
		switch fault.Kind {
		case FaultError:
			status := fault.Status
			if status == 0 {
				status = http.StatusBadRequest
			}
			writeError(w, status, fault.Code, fmt.Sprintf("Injected error %d", fault.Code))
			return
		case FaultRateLimit:
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, 20429, "Too Many Requests")
			return
		case FaultServerError:
			writeError(w, http.StatusInternalServerError, 20500, "Internal Server Error")
			return
		case FaultBadGateway:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html><body><h1>502 Bad Gateway</h1></body></html>\n"))
			return
		case FaultHang:
			f.hang(r)
			return
		case FaultUndelivered:
			finalStatus, finalCode = "undelivered", fault.Code
			if finalCode == 0 {
				finalCode = 30003
			}
		case FaultNoFinalStatus:
			finalStatus = "sent"
		}
	}

	m := &Message{
		SID:              "SM" + randomHex(16),
		AccountSID:       accountSID,
		From:             from,
		To:               to,
		Body:             body,
		MediaURLs:        slices.Clone(media),
		ContentSID:       contentSID,
		ContentVariables: form.Get("ContentVariables"),
		StatusCallback:   form.Get("StatusCallback"),
		Status:           "queued",
		Created:          f.opts.Now(),
	}
	f.mu.Lock()
	f.messages = append(f.messages, m)
	resp := f.resource(m)
	f.mu.Unlock()
	f.opts.Logger.Debug("fake twilio accepted a message", "message_sid", m.SID)
	f.scheduleCallbacks(m, token, finalStatus, finalCode)

	if fault != nil {
		switch fault.Kind {
		case FaultAcceptThenHang:
			f.hang(r)
			return
		case FaultAcceptThenDrop:
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(resp)
}

// hang holds a request until its client gives up (or HangFor, or Close).
func (f *Fake) hang(r *http.Request) {
	t := time.NewTimer(f.opts.HangFor)
	defer t.Stop()
	select {
	case <-r.Context().Done():
	case <-t.C:
	case <-f.closed:
	}
}

const twilioTime = "Mon, 02 Jan 2006 15:04:05 -0700"

// resource is a message as Twilio's JSON shows it. Call with f.mu held.
func (f *Fake) resource(m *Message) map[string]any {
	var dateSent, errCode any
	if !m.Sent.IsZero() {
		dateSent = m.Sent.UTC().Format(twilioTime)
	}
	if m.ErrorCode != 0 {
		errCode = m.ErrorCode
	}
	uri := fmt.Sprintf("/2010-04-01/Accounts/%s/Messages/%s.json", m.AccountSID, m.SID)
	return map[string]any{
		"account_sid":           m.AccountSID,
		"api_version":           "2010-04-01",
		"body":                  m.Body,
		"date_created":          m.Created.UTC().Format(twilioTime),
		"date_updated":          m.Created.UTC().Format(twilioTime),
		"date_sent":             dateSent,
		"direction":             "outbound-api",
		"error_code":            errCode,
		"error_message":         nil,
		"from":                  m.From,
		"messaging_service_sid": nil,
		"num_media":             strconv.Itoa(len(m.MediaURLs)),
		"num_segments":          "1",
		"price":                 nil,
		"price_unit":            "USD",
		"sid":                   m.SID,
		"status":                m.Status,
		"subresource_uris":      map[string]any{"media": strings.TrimSuffix(uri, ".json") + "/Media.json"},
		"to":                    m.To,
		"uri":                   uri,
	}
}

func (f *Fake) fetch(w http.ResponseWriter, accountSID, sid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	for _, m := range f.messages {
		if m.SID == sid && m.AccountSID == accountSID {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			_ = json.NewEncoder(w).Encode(f.resource(m))
			return
		}
	}
	writeError(w, http.StatusNotFound, 20404, "The requested resource /2010-04-01/Accounts/"+accountSID+"/Messages/"+sid+".json was not found")
}

// parseDate takes Twilio's list filter dates: YYYY-MM-DD or RFC 3339.
func parseDate(s string) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, true
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, true
	}
	return time.Time{}, false
}

// list answers GET Messages.json with Twilio's filters (To, From, DateSent,
// DateSent<, DateSent>) and paging shape, newest first. Like Twilio, the
// DateSent filters compare date_sent, which a still-queued message lacks.
func (f *Fake) list(w http.ResponseWriter, r *http.Request, accountSID string) {
	q := r.URL.Query()
	pageSize := 50
	if v, err := strconv.Atoi(q.Get("PageSize")); err == nil && v > 0 {
		pageSize = min(v, 1000)
	}
	page, _ := strconv.Atoi(q.Get("Page"))
	page = max(page, 0)
	var on, after, before time.Time
	var dateOnly bool
	if v := q.Get("DateSent"); v != "" {
		on, _ = parseDate(v)
		dateOnly = len(v) == len(time.DateOnly)
	}
	if v := q.Get("DateSent>"); v != "" {
		after, _ = parseDate(v)
	}
	if v := q.Get("DateSent<"); v != "" {
		before, _ = parseDate(v)
	}

	f.mu.Lock()
	var all []map[string]any
	for i := len(f.messages) - 1; i >= 0; i-- {
		m := f.messages[i]
		if m.AccountSID != accountSID || (q.Get("To") != "" && m.To != q.Get("To")) || (q.Get("From") != "" && m.From != q.Get("From")) {
			continue
		}
		if !on.IsZero() || !after.IsZero() || !before.IsZero() {
			if m.Sent.IsZero() {
				continue
			}
			sent := m.Sent.UTC()
			if !on.IsZero() && ((dateOnly && sent.Format(time.DateOnly) != on.Format(time.DateOnly)) || (!dateOnly && !sent.Equal(on))) {
				continue
			}
			if !after.IsZero() && sent.Before(after) {
				continue
			}
			if !before.IsZero() && sent.After(before) {
				continue
			}
		}
		all = append(all, f.resource(m))
	}
	f.mu.Unlock()

	base := "/2010-04-01/Accounts/" + accountSID + "/Messages.json"
	pageURI := func(p int) string {
		v := url.Values{}
		for k, vs := range q {
			if k != "Page" && k != "PageToken" {
				v[k] = vs
			}
		}
		v.Set("PageSize", strconv.Itoa(pageSize))
		v.Set("Page", strconv.Itoa(p))
		return base + "?" + v.Encode()
	}
	start := min(page*pageSize, len(all))
	end := min(start+pageSize, len(all))
	var next, prev any
	if end < len(all) {
		next = pageURI(page + 1)
	}
	if page > 0 {
		prev = pageURI(page - 1)
	}
	msgs := all[start:end]
	if msgs == nil {
		msgs = []map[string]any{}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"messages":          msgs,
		"page":              page,
		"page_size":         pageSize,
		"start":             start,
		"end":               max(end-1, start),
		"uri":               pageURI(page),
		"first_page_uri":    pageURI(0),
		"next_page_uri":     next,
		"previous_page_uri": prev,
	})
}

// scheduleCallbacks moves a message queued → sent → delivered (or to
// finalStatus) in the background, posting a signed callback for each status
// when the message asked for them.
func (f *Fake) scheduleCallbacks(m *Message, token, finalStatus string, finalCode int) {
	steps := []string{"queued", "sent", "delivered"}
	switch finalStatus {
	case "":
	case "sent":
		steps = []string{"queued", "sent"}
	default:
		steps = []string{"queued", "sent", finalStatus}
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for _, st := range steps {
			select {
			case <-time.After(f.opts.CallbackDelay):
			case <-f.closed:
				return
			}
			f.mu.Lock()
			m.Status = st
			if st == "sent" {
				m.Sent = f.opts.Now()
			}
			if st == finalStatus {
				m.ErrorCode = finalCode
			}
			cb, sid, acct, from, to, code := m.StatusCallback, m.SID, m.AccountSID, m.From, m.To, m.ErrorCode
			lose := f.opts.CallbackLoss > 0 && cb != "" && f.rng.Float64() < f.opts.CallbackLoss
			if lose {
				f.lost++
			}
			f.mu.Unlock()
			if cb == "" || f.opts.NoCallbacks || lose {
				continue
			}
			form := url.Values{
				"MessageSid":    {sid},
				"SmsSid":        {sid},
				"MessageStatus": {st},
				"SmsStatus":     {st},
				"AccountSid":    {acct},
				"From":          {from},
				"To":            {to},
				"ApiVersion":    {"2010-04-01"},
			}
			if code != 0 {
				form.Set("ErrorCode", strconv.Itoa(code))
			}
			f.post(cb, token, form)
		}
	}()
}

// post sends one signed callback, once; a failure or a non-2xx answer is
// logged (a warning: a lost callback is why a test's message stays
// "queued") and dropped, as Twilio drops it (callbacks are best-effort).
func (f *Fake) post(cbURL, token string, form url.Values) {
	req, err := http.NewRequest(http.MethodPost, cbURL, strings.NewReader(form.Encode()))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", signature.Sign(token, cbURL, form))
	resp, err := f.client.Do(req)
	if err != nil {
		f.opts.Logger.Warn("fake twilio: status callback failed", "status", form.Get("MessageStatus"), "error", errors.Unwrap(err))
		return
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		f.opts.Logger.Warn("fake twilio: status callback refused", "status", form.Get("MessageStatus"), "http_status", resp.StatusCode)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
