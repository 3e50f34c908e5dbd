package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/edge"
)

// IdempotencyHeader is the header a client sets to make a creating POST
// safe to retry.
const IdempotencyHeader = "Idempotency-Key"

const (
	// maxIdempotencyKey bounds the key (Stripe's limit).
	maxIdempotencyKey = 255
	// idempotencyWait bounds how long a repeat waits for the first request
	// with its key to be answered.
	idempotencyWait = 10 * time.Second
	// idempotencyTxKey holds the key's transaction in the gin context.
	idempotencyTxKey = "conversa.idempotency_tx"
)

// txDB is what a handler writes through (dbFor).
type txDB interface {
	store.DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
}

// dbFor is where a creating handler writes: under an Idempotency-Key, the
// key's transaction (its Begin is a savepoint), so the record of the key
// and what the request created commit together or not at all; otherwise
// the pool.
func (s *Server) dbFor(c *gin.Context) txDB {
	if v, ok := c.Get(idempotencyTxKey); ok {
		if tx, ok := v.(pgx.Tx); ok {
			return tx
		}
	}
	return s.DB
}

// Idempotent makes a creating POST honour an Idempotency-Key (see
// docs/operations.md): the first request with a key is answered as usual,
// inside a transaction that also records the key (hashed with who asked),
// a hash of the method, path and body, and the answer (sealed: it may hold
// an API key shown once), for store.IdempotencyTTL. A repeat with the same
// request gets that answer again and creates nothing; one that races the
// first waits for it. The same key with another request is 409. Answers of
// 5xx and 429 are not kept: the request did nothing and may be retried.
func (s *Server) Idempotent(c *gin.Context) {
	key := c.GetHeader(IdempotencyHeader)
	if key == "" {
		c.Next()
		return
	}
	if !validIdempotencyKey(key) {
		s.apiError(c, invalid("%s must be 1 to %d printable ASCII characters", IdempotencyHeader, maxIdempotencyKey))
		return
	}
	body, err := edge.ReadBody(c)
	if errors.Is(err, edge.ErrTooLarge) {
		s.apiError(c, err)
		return
	}
	if err != nil {
		s.apiError(c, invalid("could not read the body"))
		return
	}
	c.Request.Body = io.NopCloser(bytes.NewReader(body))
	keyHash, requestHash := idempotencyHashes(who(c), key, c.Request, body)

	ctx := c.Request.Context()
	tx, err := s.DB.Begin(ctx)
	if err != nil {
		s.apiError(c, err)
		return
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	claimed, prior, err := store.ClaimIdempotencyKey(ctx, tx, keyHash, requestHash, idempotencyWait)
	if errors.Is(err, store.ErrKeyInProgress) {
		c.AbortWithStatusJSON(http.StatusConflict, ErrorBody("idempotency_in_progress",
			"a request with this Idempotency-Key is still being answered; retry it in a moment"))
		return
	}
	if err != nil {
		s.apiError(c, err)
		return
	}
	if !claimed {
		if !bytes.Equal(prior.RequestHash, requestHash) {
			c.AbortWithStatusJSON(http.StatusConflict, keyReusedBody())
			return
		}
		answer, err := s.Sealer.Open(prior.ResponseSealed)
		if err != nil {
			s.apiError(c, err)
			return
		}
		c.Header("Idempotent-Replayed", "true")
		c.Data(prior.Status, "application/json; charset=utf-8", []byte(answer))
		c.Abort()
		return
	}

	// The handler runs in a savepoint: a statement of its that fails, or a
	// refusal, undoes its writes and leaves the key's transaction usable.
	sp, err := tx.Begin(ctx)
	if err != nil {
		s.apiError(c, err)
		return
	}
	rec := &bufferedWriter{ResponseWriter: c.Writer, status: http.StatusOK}
	c.Writer = rec
	// A handler that panics: gin.Recovery answers through the real writer.
	defer func() {
		if c.Writer == gin.ResponseWriter(rec) {
			c.Writer = rec.ResponseWriter
		}
	}()
	c.Set(idempotencyTxKey, sp)
	c.Next()
	c.Writer = rec.ResponseWriter
	status := rec.status

	if status >= 400 {
		_ = sp.Rollback(ctx)
	} else if err := sp.Commit(ctx); err != nil {
		s.apiError(c, err)
		return
	}
	if status >= 500 || status == http.StatusTooManyRequests {
		_ = tx.Rollback(ctx)
		rec.flush()
		return
	}
	err = s.saveAnswer(ctx, tx, keyHash, status, rec.body.Bytes(), idempotencyConversation(c))
	if err != nil && status < 400 {
		// What the request created is rolled back with the key: say so.
		s.apiError(c, err)
		return
	}
	// A refusal created nothing: it is the answer, kept or not.
	rec.flush()
}

// saveAnswer keeps the answer with the key and commits the transaction.
func (s *Server) saveAnswer(ctx context.Context, tx pgx.Tx, keyHash []byte, status int, body []byte, conversationID int64) error {
	sealed, err := s.Sealer.Seal(string(body))
	if err != nil {
		return err
	}
	if err := store.SaveIdempotentAnswer(ctx, tx, keyHash, status, sealed, conversationID); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// validIdempotencyKey accepts 1 to maxIdempotencyKey printable ASCII characters.
func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > maxIdempotencyKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// idempotencyHashes are the key's record id (who asked, and the key: two
// callers' keys never meet) and the request's fingerprint.
func idempotencyHashes(p principal, key string, r *http.Request, body []byte) (keyHash, requestHash []byte) {
	h := requestHasher(r)
	h.Write(body)
	return idempotencyKeyHash(p, key), h.Sum(nil)
}

// idempotencyKeyHash is an Idempotency-Key's record id: who asked, and the key.
func idempotencyKeyHash(p principal, key string) []byte {
	who := "admin"
	if !p.admin {
		who = "tenant:" + p.tenantID
	}
	k := sha256.Sum256([]byte(who + "\x00" + key))
	return k[:]
}

// requestHasher is a request's fingerprint with its method and path
// written: the caller writes the body (all of it, or as it streams).
func requestHasher(r *http.Request) hash.Hash {
	h := sha256.New()
	h.Write([]byte(r.Method + "\x00" + r.URL.Path + "?" + r.URL.RawQuery + "\x00"))
	return h
}

// keyReusedBody is the 409 answer to an Idempotency-Key used for another request.
func keyReusedBody() gin.H {
	return ErrorBody("idempotency_key_reused",
		"this Idempotency-Key was used in the last 24 hours for a different request (method, path or body); use a new key for a new request")
}

// bufferedWriter holds a handler's answer until the key's transaction has
// committed, so a client never sees a success that was rolled back.
type bufferedWriter struct {
	gin.ResponseWriter
	status  int
	written bool
	body    bytes.Buffer
}

func (w *bufferedWriter) WriteHeader(code int) {
	if !w.written {
		w.status = code
	}
}

func (w *bufferedWriter) WriteHeaderNow() { w.written = true }

func (w *bufferedWriter) Write(b []byte) (int, error) {
	w.written = true
	return w.body.Write(b)
}

func (w *bufferedWriter) WriteString(s string) (int, error) {
	w.written = true
	return w.body.WriteString(s)
}

func (w *bufferedWriter) Status() int   { return w.status }
func (w *bufferedWriter) Size() int     { return w.body.Len() }
func (w *bufferedWriter) Written() bool { return w.written }

// flush sends the held answer.
func (w *bufferedWriter) flush() {
	w.ResponseWriter.WriteHeader(w.status)
	_, _ = w.ResponseWriter.Write(w.body.Bytes())
}

// idempotencyConversation is the conversation a creating POST's answer is
// about (a person's message, which holds its body), or 0: its contact's
// erasure deletes the stored answer with the rest.
func idempotencyConversation(c *gin.Context) int64 {
	if !strings.HasPrefix(c.FullPath(), "/api/v1/conversations/:id/") {
		return 0
	}
	id, err := pathID(c, "id")
	if err != nil {
		return 0
	}
	return id
}
