package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conversa/conversa/internal/twiliohook"
)

// load posts signed inbound webhooks as Twilio would, at a steady rate, and
// redelivers some (at once, concurrently, or a little later). A post that
// gets no 200 — the server is down, or answers 5xx — is retried with
// backoff for up to a minute, as Twilio's retries and fallback URL would.
type load struct {
	h      *harness
	poster *twiliohook.Poster
	prefix string

	mu    sync.Mutex
	acked map[string]bool // MessageSid → a 200 came
	sent  map[string]bool // every MessageSid posted

	posts, retried, redeliveries, concurrent, rejected, gaveUp atomic.Int64
}

func newLoad(h *harness) *load {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 10 * time.Second}
	return &load{
		h:      h,
		poster: &twiliohook.Poster{HC: &http.Client{Transport: tr, Timeout: 15 * time.Second}, Target: h.baseURL, PublicBaseURL: h.baseURL},
		prefix: randHex(4),
		acked:  map[string]bool{},
		sent:   map[string]bool{},
	}
}

func (l *load) run(ctx context.Context) {
	contacts := make([]string, l.h.cfg.Contacts)
	for i := range contacts {
		contacts[i] = "whatsapp:+1555" + randDigits(7)
	}
	interval := time.Duration(float64(time.Second) / l.h.cfg.Rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 48)
	spawn := func(delay time.Duration, form url.Values) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if delay > 0 {
				time.Sleep(delay)
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			l.deliver(ctx, form)
		}()
	}
	for i := 0; i < l.h.cfg.Messages && ctx.Err() == nil; i++ {
		<-tick.C
		c := rand.IntN(len(contacts))
		sid := fmt.Sprintf("SM%s%024d", l.prefix, i)
		form := url.Values{
			"MessageSid": {sid}, "SmsMessageSid": {sid}, "AccountSid": {l.h.account},
			"From": {contacts[c]}, "To": {l.h.numbers[c%len(l.h.numbers)]},
			"Body": {fmt.Sprintf("Hello, question %d about my order", i)}, "NumMedia": {"0"},
			"ProfileName": {"Chaos"}, "WaId": {contacts[c][len("whatsapp:+"):]}, "ApiVersion": {"2010-04-01"},
		}
		l.mu.Lock()
		l.sent[sid] = true
		l.mu.Unlock()
		spawn(0, form)
		if rand.Float64() < l.h.cfg.Redeliver {
			l.redeliveries.Add(1)
			if rand.IntN(2) == 0 {
				l.concurrent.Add(1)
				spawn(0, form)
			} else {
				spawn(time.Duration(200+rand.IntN(3000))*time.Millisecond, form)
			}
		}
	}
	wg.Wait()
}

// deliver posts one webhook until it gets a 200, like Twilio's retries.
func (l *load) deliver(ctx context.Context, form url.Values) {
	sid := form.Get("MessageSid")
	backoff := 200 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for {
		l.posts.Add(1)
		code, err := l.poster.Post(ctx, "/twilio/inbound", l.h.token, form)
		switch {
		case err == nil && code == http.StatusOK:
			l.mu.Lock()
			l.acked[sid] = true
			l.mu.Unlock()
			return
		case err == nil && code < 500:
			// Twilio does not retry a 4xx: the message is refused for good.
			l.rejected.Add(1)
			l.h.logf("webhook %s answered %d", sid, code)
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			l.gaveUp.Add(1)
			return
		}
		l.retried.Add(1)
		time.Sleep(backoff)
		backoff = min(2*backoff, 2*time.Second)
	}
}
