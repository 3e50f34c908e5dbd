package webhook

import (
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/conversa/conversa/webhook/api"
)

// ipLimiter is a token bucket per client IP, in this process's memory (a
// fleet of N serve processes allows N times the rate: it is a brake on
// abuse, not a quota).
type ipLimiter struct {
	mu      sync.Mutex
	buckets map[string]*ipBucket
	limit   rate.Limit
	burst   int
	now     func() time.Time
}

type ipBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(perSecond float64, burst int, now func() time.Time) *ipLimiter {
	return &ipLimiter{buckets: map[string]*ipBucket{}, limit: rate.Limit(perSecond), burst: burst, now: now}
}

// bucket returns ip's bucket, forgetting idle ones when the map grows.
func (l *ipLimiter) bucket(ip string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.buckets) > 10_000 {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > time.Minute {
				delete(l.buckets, k)
			}
		}
	}
	b, ok := l.buckets[ip]
	if !ok {
		b = &ipBucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[ip] = b
	}
	b.seen = now
	return b.lim
}

// allow takes a token for ip.
func (l *ipLimiter) allow(ip string) bool { return l.bucket(ip).AllowN(l.now(), 1) }

// exhausted reports whether ip has no token left, without taking one.
func (l *ipLimiter) exhausted(ip string) bool { return l.bucket(ip).TokensAt(l.now()) < 1 }

// limitEveryRequest answers 429 once an IP exceeds its rate (the operator API).
func limitEveryRequest(l *ipLimiter) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !l.allow(c.ClientIP()) {
			c.Header("Retry-After", "1")
			c.AbortWithStatusJSON(http.StatusTooManyRequests, api.ErrorBody("rate_limited", "too many requests from this address"))
			return
		}
		c.Next()
	}
}

// limitRejected brakes an IP that keeps sending rejected webhooks (bad
// signatures, unknown numbers): only rejections spend tokens, so Twilio's
// genuine traffic, however heavy, is never refused (a 429 to Twilio is a
// message it may not retry).
func limitRejected(l *ipLimiter) gin.HandlerFunc {
	return func(c *gin.Context) {
		ip := c.ClientIP()
		if l.exhausted(ip) {
			c.Header("Retry-After", "1")
			c.AbortWithStatus(http.StatusTooManyRequests)
			return
		}
		c.Next()
		if s := c.Writer.Status(); s >= 400 && s < 500 {
			l.allow(ip)
		}
	}
}
