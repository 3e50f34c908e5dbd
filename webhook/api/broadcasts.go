package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"

	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/edge"
)

// Broadcasts (README, "Broadcasts"): POST /tenants/:id/broadcasts and
// `conversa broadcast send` both decode into a BroadcastInput and call
// CreateBroadcast; GET /broadcasts/:id reads LoadBroadcast.
//
// A broadcast of 100,000 recipients is neither one transaction nor held in
// memory: the addresses are spooled to a temporary file as the body is
// decoded (the "to" array may come before "from", which decides how they
// are read), checked in one pass over the file, and written in batches of
// BroadcastBatch recipients, each batch its own transaction with its
// messages and their conversa.send jobs.

const (
	// MaxBroadcastRecipients is the most addresses one broadcast takes.
	MaxBroadcastRecipients = 100_000
	// BroadcastBatch is how many recipients one transaction writes.
	BroadcastBatch = 1000
	// maxBroadcastBodyBytes bounds a broadcast's request body: 100,000
	// WhatsApp addresses take about 3 MiB.
	maxBroadcastBodyBytes = 16 << 20
	// maxAddressLen bounds one address as given ("whatsapp:" + 16).
	maxAddressLen = 64
	// maxContentVariables bounds a template's variables.
	maxContentVariables = 100
)

// BroadcastDB is what a broadcast is written through; *pgxpool.Pool
// satisfies it.
type BroadcastDB interface {
	store.DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
}

// BroadcastInput is a broadcast to create, as a POST body or the command
// line gives it. Its recipients are spooled to a temporary file (AddTo):
// Close removes it.
type BroadcastInput struct {
	Name             string
	From             string
	Body             string
	ContentSID       string
	ContentVariables map[string]string

	spool   *os.File
	w       *bufio.Writer
	given   int
	invalid []string
	seenBad map[string]bool
}

// NewBroadcastInput returns an input with an empty spool of recipients.
func NewBroadcastInput() (*BroadcastInput, error) {
	f, err := os.CreateTemp("", "conversa-broadcast-*")
	if err != nil {
		return nil, fmt.Errorf("broadcast spool: %w", err)
	}
	return &BroadcastInput{spool: f, w: bufio.NewWriter(f), seenBad: map[string]bool{}}, nil
}

// Close removes the spooled recipients.
func (in *BroadcastInput) Close() error {
	if in == nil || in.spool == nil {
		return nil
	}
	name := in.spool.Name()
	err := in.spool.Close()
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	in.spool = nil
	return err
}

// AddTo adds one recipient address as given. One that is not an address at
// all is kept aside as invalid (listed in the answer, never sent); past
// MaxBroadcastRecipients it is a FieldError on "to".
func (in *BroadcastInput) AddTo(address string) error {
	in.given++
	if in.given > MaxBroadcastRecipients {
		return fieldErr("to", invalid("to lists more than %d addresses", MaxBroadcastRecipients))
	}
	a := strings.TrimSpace(address)
	if len(a) > maxAddressLen || !store.ValidNumber(a) {
		in.addInvalid(a)
		return nil
	}
	if _, err := in.w.WriteString(a + "\n"); err != nil {
		return fmt.Errorf("broadcast spool: %w", err)
	}
	return nil
}

// addInvalid lists an invalid address once (cut short if it is long).
func (in *BroadcastInput) addInvalid(a string) {
	a = edge.Clean(a)
	if r := []rune(a); len(r) > maxAddressLen {
		a = string(r[:maxAddressLen]) + "…"
	}
	if !in.seenBad[a] {
		in.seenBad[a] = true
		in.invalid = append(in.invalid, a)
	}
}

// recipientAddress is address as the sender's channel sends to it: a bare
// number takes the channel's prefix, a prefixed one must be the channel's.
func recipientAddress(kind store.ChannelKind, address string) (string, bool) {
	bare, prefixed := strings.CutPrefix(address, string(store.ChannelWhatsApp)+":")
	switch {
	case kind == store.ChannelWhatsApp:
		return string(store.ChannelWhatsApp) + ":" + bare, true
	case prefixed:
		return "", false
	}
	return address, true
}

// eachSpooled calls fn with every spooled address, in the order given.
func (in *BroadcastInput) eachSpooled(fn func(address string) error) error {
	if err := in.w.Flush(); err != nil {
		return fmt.Errorf("broadcast spool: %w", err)
	}
	if _, err := in.spool.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("broadcast spool: %w", err)
	}
	sc := bufio.NewScanner(in.spool)
	for sc.Scan() {
		if err := fn(sc.Text()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("broadcast spool: %w", err)
	}
	return nil
}

// DecodeBroadcast reads a POST /tenants/:id/broadcasts body token by token,
// spooling the "to" addresses as they come. Bad JSON, unknown or repeated
// fields and wrong types are ErrInvalid; a body over r's limit is
// edge.ErrTooLarge (from http.MaxBytesReader). The caller Closes the input,
// also on error.
func DecodeBroadcast(r io.Reader) (*BroadcastInput, error) {
	in, err := NewBroadcastInput()
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(r)
	if err := decodeBroadcastObject(dec, in); err != nil {
		return in, decodeError(err)
	}
	// Nothing may follow the object (reading to the end also hashes all of it).
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err == nil {
			return in, invalid("the body must hold one JSON object")
		}
		return in, decodeError(err)
	}
	return in, nil
}

// decodeBroadcastObject reads the body's one object into in.
func decodeBroadcastObject(dec *json.Decoder, in *BroadcastInput) error {
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		if err != nil {
			return err
		}
		return invalid("the body must be a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		if seen[key] {
			return fieldErr(key, invalid("field %q is given twice", key))
		}
		seen[key] = true
		switch key {
		case "name":
			err = decodeField(dec, key, &in.Name)
		case "from":
			err = decodeField(dec, key, &in.From)
		case "body":
			err = decodeField(dec, key, &in.Body)
		case "content_sid":
			err = decodeField(dec, key, &in.ContentSID)
		case "content_variables":
			err = decodeField(dec, key, &in.ContentVariables)
			if err == nil && in.ContentVariables == nil {
				in.ContentVariables = map[string]string{}
			}
		case "to":
			err = decodeTo(dec, in)
		default:
			return invalid("unknown field %q", key)
		}
		if err != nil {
			return err
		}
	}
	_, err := dec.Token() // the closing brace
	return err
}

// decodeField decodes the next value into v; a wrong type names the field.
func decodeField(dec *json.Decoder, field string, v any) error {
	err := dec.Decode(v)
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		want := "a string"
		if field == "content_variables" {
			want = `an object of strings ({"1": "..."})`
		}
		return fieldErr(field, invalid("field %q must be %s", field, want))
	}
	return err
}

// decodeTo spools the "to" array's addresses one at a time.
func decodeTo(dec *json.Decoder, in *BroadcastInput) error {
	notArray := fieldErr("to", invalid(`field "to" must be an array of addresses ("+5511...", "whatsapp:+5511...")`))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != json.Delim('[') {
		return notArray
	}
	for dec.More() {
		var a string
		if err := dec.Decode(&a); err != nil {
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) {
				return notArray
			}
			return err
		}
		if err := in.AddTo(a); err != nil {
			return err
		}
	}
	_, err = dec.Token() // the closing bracket
	return err
}

// decodeError maps a decoding failure: ours as they are, a body over the
// limit to 413, anything else to "not valid JSON".
func decodeError(err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, errInvalid):
		return err
	case errors.As(err, &mbe):
		return tooLarge{mbe.Limit}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("the body is not a complete JSON object")
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return invalid("the body is not a valid JSON object")
	}
	return fmt.Errorf("decode broadcast: %w", err)
}

// checkedBroadcast is a broadcast input that passed every check.
type checkedBroadcast struct {
	channel store.Channel
	kind    store.ChannelKind
	nb      store.NewBroadcast
}

// checkBroadcast checks in against the tenant's numbers and the channel's
// rules; each problem is a FieldError naming its field. Nothing is written.
func checkBroadcast(ctx context.Context, db store.DBTX, tenantID string, in *BroadcastInput) (checkedBroadcast, error) {
	var cb checkedBroadcast
	name, err := textField("name", in.Name, false, 200)
	if err != nil {
		return cb, fieldErr("name", err)
	}
	from := strings.TrimSpace(in.From)
	if from == "" {
		return cb, fieldErr("from", invalid("from is required: one of the tenant's numbers (+1555... or whatsapp:+1555...)"))
	}
	if in.given == 0 {
		return cb, fieldErr("to", invalid("to is required: at least one address"))
	}
	ch, err := store.TenantChannelByAddress(ctx, db, tenantID, from)
	if errors.Is(err, store.ErrNotFound) {
		return cb, fieldErr("from", invalid("from %q is not one of this tenant's numbers", edge.Clean(from)))
	}
	if err != nil {
		return cb, err
	}
	kind := store.ChannelKind(ch.Kind)
	body, err := textField("body", in.Body, false, maxBody[kind])
	if err != nil {
		return cb, fieldErr("body", err)
	}
	sid, err := textField("content_sid", in.ContentSID, false, 200)
	if err != nil {
		return cb, fieldErr("content_sid", err)
	}
	switch {
	case body != "" && sid != "":
		return cb, fieldErr("content_sid", invalid("give either body or content_sid, not both"))
	case kind == store.ChannelWhatsApp && sid == "":
		return cb, fieldErr("content_sid", invalid("content_sid is required from a WhatsApp number: a message the business starts must be an approved template (body is for SMS)"))
	case kind == store.ChannelSMS && sid != "":
		return cb, fieldErr("content_sid", invalid("content_sid is for WhatsApp numbers; an SMS broadcast takes a body"))
	case kind == store.ChannelSMS && body == "":
		return cb, fieldErr("body", invalid("body is required from an SMS number"))
	}
	vars, err := contentVariables(in.ContentVariables, sid != "")
	if err != nil {
		return cb, err
	}
	return checkedBroadcast{channel: ch, kind: kind, nb: store.NewBroadcast{
		TenantID: tenantID, ChannelID: ch.ID, Name: name, Body: body, ContentSID: sid, ContentVariables: vars,
	}}, nil
}

// contentVariables checks a template's variables and returns them as the
// JSON object Twilio's ContentVariables takes (nil for none).
func contentVariables(vars map[string]string, template bool) ([]byte, error) {
	bad := func(format string, args ...any) error { return fieldErr("content_variables", invalid(format, args...)) }
	if vars == nil {
		return nil, nil
	}
	if !template {
		return nil, bad("content_variables go with a content_sid")
	}
	if len(vars) > maxContentVariables {
		return nil, bad("content_variables holds at most %d variables", maxContentVariables)
	}
	clean := make(map[string]string, len(vars))
	for k, v := range vars {
		key := strings.TrimSpace(edge.Clean(k))
		if key == "" || len(key) > 64 {
			return nil, bad("content_variables keys must be 1 to 64 characters")
		}
		val, err := textField("content_variables["+key+"]", v, false, 1600)
		if err != nil {
			return nil, fieldErr("content_variables", err)
		}
		clean[key] = val
	}
	return json.Marshal(clean)
}

// BroadcastOptions are a creation's Idempotency-Key (nil hashes for none)
// and its batch size (0 = BroadcastBatch).
type BroadcastOptions struct {
	KeyHash, RequestHash []byte
	BatchSize            int
}

// BroadcastAnswer is the answer to a broadcast's creation.
type BroadcastAnswer struct {
	ID              int64    `json:"id"`
	Recipients      int      `json:"recipients"`
	Queued          int      `json:"queued"`
	SkippedOptedOut int      `json:"skipped_opted_out"`
	Invalid         []string `json:"invalid"`
	// Replayed: the key's broadcast had been created before; nothing new
	// was written.
	Replayed bool `json:"-"`
}

// errKeyReused is an Idempotency-Key used before for another request.
var errKeyReused = errors.New("idempotency key reused")

// CreateBroadcast checks in (nothing is written when it is refused: a
// FieldError), then writes the broadcast and its recipients in batches of
// o.BatchSize, each batch one transaction with its messages and their
// conversa.send jobs, and last the conversa.broadcast job that finishes
// it. Invalid addresses are listed in the answer and skipped.
//
// Under an Idempotency-Key (o.KeyHash) a broadcast the key already made is
// resumed: its batches are written again, and the unique (broadcast,
// contact) makes every recipient already written a no-op, so a creation
// that died half-way completes without a second message to anyone. A key
// used for another request is errKeyReused.
func CreateBroadcast(ctx context.Context, db BroadcastDB, ins edge.Inserter, tenantID string, in *BroadcastInput, o BroadcastOptions) (BroadcastAnswer, error) {
	cb, err := checkBroadcast(ctx, db, tenantID, in)
	if err != nil {
		return BroadcastAnswer{}, err
	}
	valid := 0
	err = in.eachSpooled(func(a string) error {
		if _, ok := recipientAddress(cb.kind, a); ok {
			valid++
		} else {
			in.addInvalid(a)
		}
		return nil
	})
	if err != nil {
		return BroadcastAnswer{}, err
	}
	if valid == 0 {
		return BroadcastAnswer{}, fieldErr("to", invalid("to holds no valid address for %s (want +E.164, e.g. +5511987654321)", cb.channel.Address))
	}

	cb.nb.KeyHash, cb.nb.RequestHash = o.KeyHash, o.RequestHash
	b, created, err := store.CreateBroadcast(ctx, db, cb.nb)
	if err != nil {
		return BroadcastAnswer{}, err
	}
	if !created && !bytes.Equal(b.RequestHash, o.RequestHash) {
		return BroadcastAnswer{}, errKeyReused
	}
	replayed := !created && b.QueuedAt != nil
	if !replayed {
		rate := store.SendRate(cb.kind, cb.channel.RatePerSecond)
		if err := writeRecipients(ctx, db, ins, b, cb.kind, rate, in, o.BatchSize); err != nil {
			return BroadcastAnswer{}, err
		}
		if b, err = queueBroadcast(ctx, db, ins, b, len(in.invalid)); err != nil {
			return BroadcastAnswer{}, err
		}
	}
	t, err := store.TallyBroadcast(ctx, db, b.ID)
	if err != nil {
		return BroadcastAnswer{}, err
	}
	invalidList := in.invalid
	if invalidList == nil {
		invalidList = []string{}
	}
	return BroadcastAnswer{ID: b.ID, Recipients: b.Recipients, Queued: t.Queued, SkippedOptedOut: t.SkippedOptedOut,
		Invalid: invalidList, Replayed: replayed}, nil
}

// writeRecipients writes the spooled valid addresses in batches, each in a
// transaction of its own. The n-th message's send is due n/rate seconds
// from now (jobargs.BroadcastSendOpts); the pacer still decides each slot.
func writeRecipients(ctx context.Context, db BroadcastDB, ins edge.Inserter, b store.Broadcast, kind store.ChannelKind, rate float64, in *BroadcastInput, size int) error {
	if size <= 0 {
		size = BroadcastBatch
	}
	due := sendSchedule{start: time.Now(), interval: time.Duration(float64(time.Second) / rate)}
	batch := make([]string, 0, size)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		// Sorted and distinct: one row per address, locks in one order.
		slices.Sort(batch)
		addresses := slices.Compact(batch)
		n, err := writeBatch(ctx, db, ins, b, addresses, due)
		for try := 1; try < 3 && isDeadlock(err); try++ {
			// An ingest batch that took the same contacts the other way
			// round: the batch rolled back whole, and goes again.
			n, err = writeBatch(ctx, db, ins, b, addresses, due)
		}
		due.queued += n
		batch = batch[:0]
		return err
	}
	err := in.eachSpooled(func(a string) error {
		addr, ok := recipientAddress(kind, a)
		if !ok {
			return nil
		}
		batch = append(batch, addr)
		if len(batch) == size {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// sendSchedule spaces a broadcast's sends: the n-th is due at start + n × interval.
type sendSchedule struct {
	start    time.Time
	interval time.Duration
	queued   int
}

// at is when the i-th message of the next batch is due.
func (s sendSchedule) at(i int) time.Time {
	return s.start.Add(time.Duration(s.queued+i) * s.interval)
}

// writeBatch writes one batch of recipients, their messages and their
// send jobs in one transaction, and returns how many messages it wrote.
func writeBatch(ctx context.Context, db BroadcastDB, ins edge.Inserter, b store.Broadcast, addresses []string, due sendSchedule) (int, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	res, err := store.AddBroadcastRecipients(ctx, tx, b, addresses)
	if err != nil {
		return 0, err
	}
	if len(res.MessageIDs) > 0 {
		params := make([]river.InsertManyParams, len(res.MessageIDs))
		for i, id := range res.MessageIDs {
			params[i] = river.InsertManyParams{Args: jobargs.SendArgs{TenantID: b.TenantID, MessageID: id},
				InsertOpts: jobargs.BroadcastSendOpts(due.at(i))}
		}
		if _, err := ins.InsertManyTx(ctx, tx, params); err != nil {
			return 0, fmt.Errorf("insert broadcast send jobs: %w", err)
		}
	}
	return len(res.MessageIDs), tx.Commit(ctx)
}

// isDeadlock reports whether err is Postgres' 40P01 deadlock_detected.
func isDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01"
}

// queueBroadcast marks the broadcast queued and inserts its
// conversa.broadcast job, in one transaction.
func queueBroadcast(ctx context.Context, db BroadcastDB, ins edge.Inserter, b store.Broadcast, invalid int) (store.Broadcast, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return b, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	b, err = store.MarkBroadcastQueued(ctx, tx, b.ID, invalid)
	if err != nil {
		return b, err
	}
	if _, err := ins.InsertTx(ctx, tx, jobargs.BroadcastArgs{TenantID: b.TenantID, BroadcastID: b.ID}, nil); err != nil {
		return b, fmt.Errorf("insert broadcast job: %w", err)
	}
	return b, tx.Commit(ctx)
}

// BroadcastView is a broadcast as GET /broadcasts/:id shows it.
type BroadcastView struct {
	store.Broadcast
	Queued          int                         `json:"queued"`
	SkippedOptedOut int                         `json:"skipped_opted_out"`
	Counts          map[store.MessageStatus]int `json:"counts"`
	// Settled counts the messages whose delivery is over (a final status,
	// or given up by reconciliation).
	Settled int `json:"settled"`
}

// LoadBroadcast returns a broadcast in scope with its counts.
func LoadBroadcast(ctx context.Context, db store.DBTX, scope store.Scope, id int64) (BroadcastView, error) {
	b, err := store.GetBroadcast(ctx, db, scope, id)
	if err != nil {
		return BroadcastView{}, err
	}
	t, err := store.TallyBroadcast(ctx, db, id)
	if err != nil {
		return BroadcastView{}, err
	}
	return BroadcastView{Broadcast: b, Queued: t.Queued, SkippedOptedOut: t.SkippedOptedOut, Counts: t.Counts, Settled: t.Settled}, nil
}

// CreateBroadcast handles POST /api/v1/tenants/:id/broadcasts: 202 with
// the answer once every recipient's message and job is written. It honours
// an Idempotency-Key itself (not through Idempotent, whose one transaction
// and buffered body a broadcast must not have): see CreateBroadcast.
func (s *Server) CreateBroadcast(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	key := c.GetHeader(IdempotencyHeader)
	if key != "" && !validIdempotencyKey(key) {
		s.apiError(c, invalid("%s must be 1 to %d printable ASCII characters", IdempotencyHeader, maxIdempotencyKey))
		return
	}
	h := requestHasher(c.Request)
	body := http.MaxBytesReader(c.Writer, c.Request.Body, maxBroadcastBodyBytes)
	in, err := DecodeBroadcast(io.TeeReader(body, h))
	defer in.Close() //nolint:errcheck // a temporary file
	if err != nil {
		s.apiError(c, err)
		return
	}
	var o BroadcastOptions
	if key != "" {
		o.KeyHash, o.RequestHash = idempotencyKeyHash(who(c), key), h.Sum(nil)
	}
	// A client that goes away does not stop the batches half-way.
	ctx := context.WithoutCancel(c.Request.Context())
	answer, err := CreateBroadcast(ctx, s.DB, s.River, tenantID, in, o)
	if errors.Is(err, errKeyReused) {
		c.AbortWithStatusJSON(http.StatusConflict, keyReusedBody())
		return
	}
	if err != nil {
		s.apiError(c, err)
		return
	}
	if answer.Replayed {
		c.Header("Idempotent-Replayed", "true")
	}
	c.JSON(http.StatusAccepted, answer)
}

// GetBroadcast handles GET /api/v1/broadcasts/:id.
func (s *Server) GetBroadcast(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.apiError(c, err)
		return
	}
	v, err := LoadBroadcast(c.Request.Context(), s.DB, who(c).scope(), id)
	if err != nil {
		s.apiError(c, err)
		return
	}
	c.JSON(http.StatusOK, v)
}
