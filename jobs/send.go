package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/conversa/conversa/internal/twilio"
	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
)

const (
	// lookupSkew widens a Twilio list look-up for clock differences between
	// Postgres and Twilio.
	lookupSkew = 2 * time.Minute
	// paceMaxWait is the longest a send sleeps for its slot; further out it
	// snoozes. Far below the job timeout.
	paceMaxWait = time.Second
	// sendDeadlineMargin is kept free between a create call's timeout and
	// the job's deadline.
	sendDeadlineMargin = 500 * time.Millisecond
)

// SendWorker works conversa.send: it delivers one outbound message (a bot
// reply, a person's message) through Twilio, never twice. Every outbound
// message is sent by its own conversa.send job, which River keeps with its
// final state and attempts (docs/delivery.md, "Send").
//
// One run of the job is one attempt (attempt) followed by one settlement
// (settle): attempt calls Twilio at most once and says what happened as an
// outcome; settle alone turns that outcome into the message's state, its
// trace, its refund and the job's fate.
type SendWorker struct {
	river.WorkerDefaults[jobargs.SendArgs]
	db            DB
	sealer        *store.Sealer
	twilio        *twilio.Client
	pacer         *Pacer
	publicBaseURL string
	logger        *slog.Logger
	metrics       *Metrics
	now           func() time.Time
}

// NewSendWorker builds the conversa.send worker; d.Twilio and d.Sealer are
// required. It owns the process's one pacer (and its Redis circuit breaker).
func NewSendWorker(d Deps) *SendWorker {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &SendWorker{
		db:            d.DB,
		sealer:        d.Sealer,
		twilio:        d.Twilio,
		pacer:         d.pacer(),
		publicBaseURL: d.PublicBaseURL,
		logger:        d.Logger,
		metrics:       d.Metrics,
		now:           d.Now,
	}
}

// NextRetry backs off 2^attempt seconds (±10 %), capped at 30 minutes: with
// 12 attempts a message gives up after about an hour of 429s or outages.
func (w *SendWorker) NextRetry(job *river.Job[jobargs.SendArgs]) time.Time {
	d := time.Duration(1<<min(job.Attempt, 11)) * time.Second
	d = min(d, 30*time.Minute)
	jitter := 0.9 + 0.2*rand.Float64()
	return time.Now().Add(time.Duration(float64(d) * jitter))
}

// Work delivers one message: one attempt, then its settlement.
func (w *SendWorker) Work(ctx context.Context, job *river.Job[jobargs.SendArgs]) error {
	a := job.Args
	log := w.logger.With("tenant_id", a.TenantID, "message_id", a.MessageID, "job_id", job.ID, "job_kind", job.Kind)
	d, out := w.attempt(ctx, job)
	label, err := w.settle(ctx, log, job, d, out)
	noteOutcome(ctx, label)
	return err
}

// outcomeKind is what one send attempt came to.
type outcomeKind int

const (
	// outAccepted: Twilio has the message, created by this attempt or
	// found by the look-up for an earlier one.
	outAccepted outcomeKind = iota
	// outRetry: Twilio certainly did not take it (429, refused
	// connection); it is unsent and may be sent again later.
	outRetry
	// outAmbiguous: it may exist at Twilio (timeout, 5xx, lost answer, a
	// look-up that failed): look before any resend.
	outAmbiguous
	// outPermanent: Twilio refused it and always will.
	outPermanent
	// outUnsendable: Conversa will not send it (opted out, outside the
	// WhatsApp window, unreadable auth token). Twilio was not called.
	outUnsendable
	// outDone: it was already accepted or ended; this run is a duplicate.
	outDone
	// outGone: there is no such outbound message.
	outGone
	// outWait: no pacing slot soon, or too little job time left for a
	// whole create call; come back after wait.
	outWait
	// outError: our own failure (database, pacing store) before Twilio
	// could be called.
	outError
)

// outcome is one send attempt's result, for settle.
type outcome struct {
	kind outcomeKind
	// sid, status and how (create, lookup) when accepted.
	sid    string
	status store.MessageStatus
	how    string
	// twilio is Twilio's classified error for retry, ambiguous, permanent;
	// for an ambiguous outcome from a failed look-up, lookup is true.
	twilio *twilio.SendError
	lookup bool
	// code and reason when unsendable.
	code, reason string
	wait         time.Duration
	err          error
}

// attempt makes one send attempt of job's message and reports its outcome.
// It calls Twilio at most once to create the message, and only after the
// claim (status claimed) has committed; a message found claimed means an
// earlier attempt's outcome is unknown, so it first looks the message up in
// Twilio's list and creates it only if Twilio has none. Besides the claim it
// writes only the look-up's trace event: everything else is settle's.
// The claim is a status of its own (store.StatusClaimed), apart from
// Twilio's "sending".
func (w *SendWorker) attempt(ctx context.Context, job *river.Job[jobargs.SendArgs]) (store.Delivery, outcome) {
	a := job.Args
	d, err := store.LoadDelivery(ctx, w.db, a.TenantID, a.MessageID)
	if errors.Is(err, store.ErrNotFound) {
		return d, outcome{kind: outGone, err: err}
	}
	if err != nil {
		return d, outcome{kind: outError, err: err}
	}
	if d.Direction != store.DirectionOutbound {
		return d, outcome{kind: outGone, err: errors.New("send: message is not outbound")}
	}
	if !d.Status.Unsent() {
		return d, outcome{kind: outDone}
	}
	msg, code, reason := w.outgoing(d)
	if reason != "" {
		return d, outcome{kind: outUnsendable, code: code, reason: reason}
	}

	if d.Status == store.StatusClaimed {
		found, err := w.findEarlierSend(ctx, d, msg)
		if err != nil {
			return d, outcome{kind: outAmbiguous, twilio: twilio.Classify(err), lookup: true}
		}
		if found != nil {
			return d, outcome{kind: outAccepted, sid: found.SID, status: store.MessageStatus(found.Status), how: "lookup"}
		}
		if err := store.AddEvent(ctx, w.db, d.TenantID, d.MessageID, "send.lookup", map[string]any{"found": false}); err != nil {
			return d, outcome{kind: outError, err: err}
		}
	}

	wait, ok, err := w.pacer.Reserve(ctx, d.ChannelAddress, store.SendRate(d.ChannelKind, d.RatePerSecond))
	if err != nil {
		return d, outcome{kind: outError, err: fmt.Errorf("pace: %w", err)}
	}
	if !ok {
		return d, outcome{kind: outWait, wait: wait}
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return d, outcome{kind: outError, err: ctx.Err()}
		}
	}
	// A create call must end before the job times out: a job still inside
	// one when River rescues it could run twice at once. twilio-go takes no
	// context, so check the time left instead.
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < w.twilio.Timeout()+sendDeadlineMargin {
		return d, outcome{kind: outWait, wait: time.Second}
	}
	claimed, err := store.ClaimSend(ctx, w.db, d.TenantID, d.MessageID, job.Attempt)
	if err != nil {
		return d, outcome{kind: outError, err: err}
	}
	if !claimed {
		return d, outcome{kind: outDone}
	}

	sid, status, err := w.twilio.Send(msg)
	if err != nil {
		se := twilio.Classify(err)
		switch se.Class {
		case twilio.ClassRetry:
			return d, outcome{kind: outRetry, twilio: se}
		case twilio.ClassPermanent:
			return d, outcome{kind: outPermanent, twilio: se}
		default:
			return d, outcome{kind: outAmbiguous, twilio: se}
		}
	}
	return d, outcome{kind: outAccepted, sid: sid, status: store.MessageStatus(status), how: "create"}
}

// settle is the one place an attempt's outcome becomes the message's state,
// its trace, its refund and the job's fate (completed, retried, snoozed,
// cancelled; discarded once River is out of attempts). It returns the
// outcome's label for conversa_jobs_total and the error River acts on.
func (w *SendWorker) settle(ctx context.Context, log *slog.Logger, job *river.Job[jobargs.SendArgs], d store.Delivery, o outcome) (string, error) {
	lastAttempt := job.Attempt >= job.MaxAttempts
	if o.twilio != nil && !o.lookup {
		w.metrics.TwilioSend(o.twilio.Class)
	}
	switch o.kind {
	case outAccepted:
		if o.how == "create" {
			w.metrics.TwilioSend(twilio.ClassAccepted)
		} else {
			w.metrics.Duplicate("send")
		}
		if _, err := store.MarkSent(ctx, w.db, d.TenantID, d.MessageID, o.sid, o.status, o.how); err != nil {
			// Twilio has it; the status callback (keyed by ?m=) or the next
			// attempt's look-up records the SID. Never failed for this.
			return JobRetry, fmt.Errorf("store sent message: %w", err)
		}
		if o.how == "create" && d.ReplyToCreatedAt != nil {
			w.metrics.ReplySent(w.now().Sub(*d.ReplyToCreatedAt))
		}
		log.Info("send: accepted", "message_sid", o.sid, "how", o.how, "attempt", job.Attempt)
		return JobCompleted, nil

	case outRetry:
		se := o.twilio
		if err := store.Unclaim(ctx, w.db, d.TenantID, d.MessageID, "send.retry", attemptDetail(se, job.Attempt)); err != nil {
			return w.ourError(ctx, log, job, err)
		}
		if lastAttempt {
			return w.failAndCancel(ctx, log, job, d, se.CodeString(), "gave_up_"+se.Reason, se)
		}
		log.Info("send: will retry", "reason", se.Reason, "error_code", se.Code, "attempt", job.Attempt)
		return JobRetry, se

	case outAmbiguous:
		se := o.twilio
		kind, detail := "send.ambiguous", attemptDetail(se, job.Attempt)
		if o.lookup {
			kind, detail = "send.lookup", map[string]any{"error": se.Reason}
		}
		if err := store.AddEvent(ctx, w.db, d.TenantID, d.MessageID, kind, detail); err != nil {
			return w.ourError(ctx, log, job, err)
		}
		if lastAttempt {
			code := se.CodeString()
			if o.lookup {
				code = "" // the look-up's error, not the send's
			}
			return w.failAndCancel(ctx, log, job, d, code, "send_outcome_unknown", se)
		}
		log.Warn("send: outcome unknown; will look up before any resend", "reason", se.Reason, "lookup", o.lookup, "attempt", job.Attempt)
		return JobRetry, fmt.Errorf("send outcome unknown: %w", se)

	case outPermanent:
		return w.failAndCancel(ctx, log, job, d, o.twilio.CodeString(), o.twilio.Reason, o.twilio)

	case outUnsendable:
		if err := w.fail(ctx, d, o.code, o.reason, false); err != nil {
			return w.ourError(ctx, log, job, err)
		}
		log.Info("send: not sent", "reason", o.reason, "error_code", o.code)
		return JobFailed, nil

	case outDone:
		w.metrics.Duplicate("send")
		log.Info("send: already done", "status", d.Status)
		return JobSkipped, nil

	case outGone:
		log.Warn("send: no such outbound message", "error", o.err)
		return JobCancelled, river.JobCancel(o.err)

	case outWait:
		return JobSnoozed, river.JobSnooze(o.wait)
	}
	return w.ourError(ctx, log, job, o.err)
}

// failAndCancel fails the message for good and cancels the job: nothing is
// left to try. On 21610 (the recipient unsubscribed) the contact is opted
// out in the same transaction.
func (w *SendWorker) failAndCancel(ctx context.Context, log *slog.Logger, job *river.Job[jobargs.SendArgs], d store.Delivery, code, reason string, se *twilio.SendError) (string, error) {
	if err := w.fail(ctx, d, code, reason, se.Code == 21610); err != nil {
		return w.ourError(ctx, log, job, err)
	}
	log.Info("send: failed", "reason", reason, "error_code", code, "attempt", job.Attempt)
	return JobCancelled, river.JobCancel(se)
}

// ourError is an attempt that failed on our side. River retries it; after
// the last attempt a message Twilio never took is failed with a reason
// rather than left unsent (best effort: the database may be what failed).
func (w *SendWorker) ourError(ctx context.Context, log *slog.Logger, job *river.Job[jobargs.SendArgs], err error) (string, error) {
	if job.Attempt < job.MaxAttempts {
		return JobRetry, err
	}
	a := job.Args
	if ferr := w.inTx(ctx, func(tx pgx.Tx) error {
		_, err := store.FailUnsent(ctx, tx, a.TenantID, a.MessageID, "send_gave_up")
		return err
	}); ferr != nil {
		log.Error("send: could not mark the message failed after the last attempt", "error", ferr)
	}
	return JobDiscarded, err
}

// fail ends d as failed with a reason (and Twilio's code), refunds it, and
// opts the contact out when optOut.
func (w *SendWorker) fail(ctx context.Context, d store.Delivery, code, reason string, optOut bool) error {
	return w.inTx(ctx, func(tx pgx.Tx) error {
		if optOut {
			if err := store.SetContactOptOut(ctx, tx, d.TenantID, d.ContactID, true); err != nil {
				return err
			}
		}
		_, err := store.MarkFailed(ctx, tx, d.TenantID, d.MessageID, code, reason)
		return err
	})
}

// outgoing is the Twilio request for d, or the error code and reason it
// cannot be sent with: the contact opted out, a WhatsApp reply outside the
// 24 h window without a template, or an auth token that cannot be opened.
// A message with a template of its own (a broadcast's) sends that; any
// other message sends its body inside the window and the channel's
// template outside it.
func (w *SendWorker) outgoing(d store.Delivery) (msg twilio.Outgoing, code, reason string) {
	if d.OptedOut {
		return msg, "", "opted_out"
	}
	msg = twilio.Outgoing{
		AccountSID:     d.AccountSID,
		From:           d.ChannelAddress,
		To:             d.ContactAddress,
		Body:           d.Body,
		StatusCallback: w.publicBaseURL + "/twilio/status?m=" + strconv.FormatInt(d.MessageID, 10),
	}
	switch {
	case d.ContentSID != nil && *d.ContentSID != "":
		// The message's own template (a broadcast's): business-initiated,
		// so allowed outside the window too.
		msg.ContentSID, msg.ContentVariables = *d.ContentSID, contentVariables(d.ContentVars)
	case !store.FreeTextAllowed(d.ChannelKind, d.LastInboundAt, w.now()):
		if d.TemplateSID == nil || *d.TemplateSID == "" {
			return msg, "63016", "outside_whatsapp_window"
		}
		msg.ContentSID, msg.ContentVariables = *d.TemplateSID, contentVariables(d.TemplateVars)
	}
	token, err := w.sealer.Open(d.AuthTokenSealed)
	if err != nil {
		return msg, "", "auth_token_unreadable"
	}
	msg.AuthToken = token
	return msg, "", ""
}

// contentVariables is a stored template's variables as Twilio's
// ContentVariables (a JSON object), or "" for none.
func contentVariables(vars []byte) string {
	if len(vars) == 0 || string(vars) == "null" {
		return ""
	}
	return string(vars)
}

// inTx runs fn in a transaction of its own.
func (w *SendWorker) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return inTx(ctx, w.db, fn)
}

// findEarlierSend looks in Twilio's list for a message this one's earlier
// attempt created: same From and To, created since the first claim, same
// body (a template's body is rendered by Twilio, so any body), and not
// already recorded as another message of ours.
func (w *SendWorker) findEarlierSend(ctx context.Context, d store.Delivery, msg twilio.Outgoing) (*twilio.Sent, error) {
	sent, err := w.twilio.FindSent(msg.AccountSID, msg.AuthToken, msg.From, msg.To, d.SendStartedAt.Add(-lookupSkew))
	if err != nil {
		return nil, err
	}
	// Older unresolved replies with the same words take the older copies.
	skip, err := store.UnresolvedSendsBefore(ctx, w.db, d.TenantID, d.ConversationID, d.MessageID, d.Body, *d.SendStartedAt)
	if err != nil {
		return nil, err
	}
	// Oldest first: the first copy is the one to keep.
	for i := len(sent) - 1; i >= 0; i-- {
		s := sent[i]
		if msg.ContentSID == "" && s.Body != msg.Body {
			continue
		}
		other, err := store.MessageBySID(ctx, w.db, s.SID)
		if err == nil && other != d.MessageID {
			continue
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		if skip > 0 {
			skip--
			continue
		}
		return &s, nil
	}
	return nil, nil
}

// attemptDetail is the trace event detail of an attempt that ended with se.
func attemptDetail(se *twilio.SendError, attempt int) map[string]any {
	return map[string]any{"class": se.Class, "reason": se.Reason, "error_code": se.Code, "http_status": se.HTTPStatus, "attempt": attempt}
}
