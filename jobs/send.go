package jobs

import (
	"context"
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/riverqueue/river"

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

// SendWorker works conversa.send: it delivers one outbound message through
// Twilio, never twice. Before calling Twilio it commits a claim (status
// "sending"); a message still "sending" without a SID on a later attempt
// means an earlier attempt's outcome is unknown, so the worker looks the
// message up in Twilio's list and sends again only if Twilio has none.
type SendWorker struct {
	river.WorkerDefaults[SendArgs]
	db            DB
	sealer        *store.Sealer
	twilio        *Twilio
	pacer         *Pacer
	publicBaseURL string
	logger        *slog.Logger
	metrics       *Metrics
	now           func() time.Time
}

// NewSendWorker builds the conversa.send worker; d.Twilio and d.Sealer are required.
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
		pacer:         &Pacer{Redis: d.Redis, DB: d.DB, MaxWait: paceMaxWait, Logger: d.Logger},
		publicBaseURL: d.PublicBaseURL,
		logger:        d.Logger,
		metrics:       d.Metrics,
		now:           d.Now,
	}
}

// NextRetry backs off 2^attempt seconds (±10 %), capped at 30 minutes: with
// 12 attempts a message gives up after about an hour of 429s or outages.
func (w *SendWorker) NextRetry(job *river.Job[SendArgs]) time.Time {
	d := time.Duration(1<<min(job.Attempt, 11)) * time.Second
	d = min(d, 30*time.Minute)
	jitter := 0.9 + 0.2*rand.Float64()
	return time.Now().Add(time.Duration(float64(d) * jitter))
}

// Work delivers one message.
func (w *SendWorker) Work(ctx context.Context, job *river.Job[SendArgs]) error {
	kind := job.Kind
	a := job.Args
	log := w.logger.With("tenant_id", a.TenantID, "message_id", a.MessageID, "job_id", job.ID, "job_kind", kind)
	outcome, err := w.work(ctx, job, log)
	if outcome == "retry" && job.Attempt >= job.MaxAttempts {
		// River discards the job after this: leave the message failed with a
		// reason, not stuck (best effort: the database may be what failed).
		if ferr := w.giveUp(ctx, a); ferr != nil {
			log.Error("send: could not mark the message failed after the last attempt", "error", ferr)
		}
	}
	w.metrics.Job(kind, outcome)
	return err
}

// giveUp fails a message whose job is out of attempts for an error of ours.
func (w *SendWorker) giveUp(ctx context.Context, a SendArgs) error {
	return w.inTx(ctx, func(tx pgx.Tx) error {
		var sid *string
		if err := tx.QueryRow(ctx, `SELECT twilio_sid FROM messages WHERE id = $1 AND tenant_id = $2`, a.MessageID, a.TenantID).Scan(&sid); err != nil {
			return err
		}
		if sid != nil {
			return nil // Twilio took it; callbacks carry it on.
		}
		_, err := store.MarkFailed(ctx, tx, a.TenantID, a.MessageID, "", "send_gave_up")
		return err
	})
}

func (w *SendWorker) work(ctx context.Context, job *river.Job[SendArgs], log *slog.Logger) (string, error) {
	a := job.Args
	lastAttempt := job.Attempt >= job.MaxAttempts
	d, err := store.LoadDelivery(ctx, w.db, a.TenantID, a.MessageID)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("send: message not found")
		return "cancelled", river.JobCancel(err)
	}
	if err != nil {
		return "retry", err
	}
	if d.Direction != "outbound" {
		return "cancelled", river.JobCancel(errors.New("send: message is not outbound"))
	}
	if d.TwilioSID != nil || (d.Status != store.StatusPending && d.Status != store.StatusSending) {
		// Already accepted by Twilio (or already ended): this run is a duplicate.
		w.metrics.Duplicate("send")
		log.Info("send: already done", "status", d.Status)
		return "skipped", nil
	}
	msg, code, reason := w.outgoing(d)
	if reason != "" {
		return w.fail(ctx, log, d, code, reason)
	}

	// An earlier attempt was claimed and its outcome is unknown: look before sending again.
	if d.Status == store.StatusSending && d.SendStartedAt != nil {
		found, err := w.findEarlierSend(ctx, d, msg)
		if err != nil {
			_ = store.AddEvent(ctx, w.db, d.TenantID, d.MessageID, "send.lookup", map[string]any{"error": Classify(err).Reason})
			if lastAttempt {
				return w.fail(ctx, log, d, "", "send_outcome_unknown")
			}
			return "retry", fmt.Errorf("look up earlier send: %w", Classify(err))
		}
		if found != nil {
			if err := w.markSent(ctx, d, found.SID, found.Status, "lookup"); err != nil {
				return "retry", err
			}
			w.metrics.Duplicate("send")
			log.Info("send: earlier attempt found at twilio", "message_sid", found.SID)
			return "completed", nil
		}
		if err := store.AddEvent(ctx, w.db, d.TenantID, d.MessageID, "send.lookup", map[string]any{"found": false}); err != nil {
			return "retry", err
		}
	}

	wait, ok, err := w.pacer.Reserve(ctx, d.ChannelAddress, SendRate(d.ChannelKind, d.RatePerSecond))
	if err != nil {
		return "retry", fmt.Errorf("pace: %w", err)
	}
	if !ok {
		return "snoozed", river.JobSnooze(wait)
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return "retry", ctx.Err()
		}
	}

	// A create call must end before the job times out: a job still inside
	// one when River rescues it could run twice at once. twilio-go takes no
	// context, so check the time left instead.
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < w.twilio.Timeout()+sendDeadlineMargin {
		return "snoozed", river.JobSnooze(time.Second)
	}
	claimed, err := store.ClaimSend(ctx, w.db, d.TenantID, d.MessageID, job.Attempt)
	if err != nil {
		return "retry", err
	}
	if !claimed {
		w.metrics.Duplicate("send")
		return "skipped", nil
	}

	sid, status, err := w.twilio.Send(msg)
	if err == nil {
		w.metrics.TwilioSend(ClassAccepted)
		if err := w.markSent(ctx, d, sid, status, "create"); err != nil {
			// Twilio has it; the status callback (keyed by ?m=) or the next
			// attempt's look-up will record the SID. Never given up as failed.
			return "retry_sent", fmt.Errorf("store sent message: %w", err)
		}
		if d.ReplyToCreatedAt != nil {
			w.metrics.ReplySent(w.now().Sub(*d.ReplyToCreatedAt))
		}
		log.Info("send: accepted", "message_sid", sid, "attempt", job.Attempt)
		return "completed", nil
	}

	se := Classify(err)
	w.metrics.TwilioSend(se.Class)
	detail := se.detail(job.Attempt)
	code = se.codeString()
	switch se.Class {
	case ClassPermanent:
		if _, err := w.failPermanent(ctx, log, d, se); err != nil {
			return "retry", err
		}
		return "cancelled", river.JobCancel(se)
	case ClassRetry:
		// Twilio did not take it: the message is definitely unsent again.
		if err := store.Unclaim(ctx, w.db, d.TenantID, d.MessageID, "send.retry", detail); err != nil {
			return "retry", err
		}
		if lastAttempt {
			if _, err := w.fail(ctx, log, d, code, "gave_up_"+se.Reason); err != nil {
				return "retry", err
			}
			return "cancelled", river.JobCancel(se)
		}
		log.Info("send: will retry", "reason", se.Reason, "error_code", se.Code, "attempt", job.Attempt)
		return "retry", se
	default:
		if err := store.AddEvent(ctx, w.db, d.TenantID, d.MessageID, "send.ambiguous", detail); err != nil {
			return "retry", err
		}
		if lastAttempt {
			if _, err := w.fail(ctx, log, d, code, "send_outcome_unknown"); err != nil {
				return "retry", err
			}
			return "cancelled", river.JobCancel(se)
		}
		log.Warn("send: outcome unknown; will look up before any resend", "reason", se.Reason, "attempt", job.Attempt)
		return "retry", se
	}
}

// outgoing is the Twilio request for d, or the error code and reason it
// cannot be sent with: the contact opted out, a WhatsApp reply outside the
// 24 h window without a template, or an auth token that cannot be opened.
func (w *SendWorker) outgoing(d store.Delivery) (msg Outgoing, code, reason string) {
	if d.OptedOut {
		return msg, "", "opted_out"
	}
	msg = Outgoing{
		AccountSID:     d.AccountSID,
		From:           d.ChannelAddress,
		To:             d.ContactAddress,
		Body:           d.Body,
		StatusCallback: w.publicBaseURL + "/twilio/status?m=" + strconv.FormatInt(d.MessageID, 10),
	}
	if !store.FreeTextAllowed(d.ChannelKind, d.LastInboundAt, w.now()) {
		if d.TemplateSID == nil || *d.TemplateSID == "" {
			return msg, "63016", "outside_whatsapp_window"
		}
		msg.ContentSID = *d.TemplateSID
		if len(d.TemplateVars) > 0 && string(d.TemplateVars) != "null" {
			msg.ContentVariables = string(d.TemplateVars)
		}
	}
	token, err := w.sealer.Open(d.AuthTokenSealed)
	if err != nil {
		return msg, "", "auth_token_unreadable"
	}
	msg.AuthToken = token
	return msg, "", ""
}

// Inline sends. A turn's reply is usually sent by the reply worker itself,
// right after the turn commits, rather than by a conversa.send job fetched a
// hop later: that hop, the job's own load and its claim commit were about a
// third of the time from webhook to Twilio. The guarantees stay those of the
// send job, because the turn's transaction commits the claim ("sending")
// together with a conversa.send job due sendGrace later, which is then a
// backup: the inline attempt always ends (the create call times out) before
// the backup is due, and if the process dies in between, the backup finds
// the message "sending" and looks it up in Twilio before sending, as any
// retried send does. An accepted inline send deletes its backup job, a
// permanently failed one cancels it; one Twilio did not take (429, refused)
// or whose outcome is unknown leaves it to the backup.
const inlineMaxWait = 20 * time.Millisecond

// sendGrace is how long after the turn commits its backup send job is due.
func (w *SendWorker) sendGrace() time.Duration { return 2*w.twilio.Timeout() + 5*time.Second }

// inlineSend is a reply claimed in its turn's transaction, to send after the commit.
type inlineSend struct {
	d    store.Delivery
	msg  Outgoing
	wait time.Duration
}

// inlineSlot decides, inside the turn's transaction, whether the written
// reply d goes out inline: it can be sent now (nothing makes it fail), its
// number has a pacing slot within inlineMaxWait (taken here), and the job
// has time left for a whole create call. The caller then claims it in the
// transaction (store.QueueClaimSend). nil means the send job sends it.
func (w *SendWorker) inlineSlot(ctx context.Context, d store.Delivery) *inlineSend {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < w.twilio.Timeout()+sendDeadlineMargin {
		return nil
	}
	msg, _, reason := w.outgoing(d)
	if reason != "" {
		return nil // the send job fails it, with the reason
	}
	wait, ok, err := w.pacer.reserveWithin(ctx, d.ChannelAddress, SendRate(d.ChannelKind, d.RatePerSecond), inlineMaxWait)
	if err != nil || !ok {
		return nil // pacing trouble or no slot: the send job paces it
	}
	return &inlineSend{d: d, msg: msg, wait: wait}
}

// sendInline makes the one inline attempt of a reply given a slot by
// inlineSlot and claimed in its turn, which has committed with backupJobID.
func (w *SendWorker) sendInline(ctx context.Context, log *slog.Logger, client *river.Client[pgx.Tx], s *inlineSend, backupJobID int64) {
	d := s.d
	log = log.With("reply_message_id", d.MessageID, "backup_job_id", backupJobID)
	if s.wait > 0 {
		time.Sleep(s.wait)
	}
	sid, status, err := w.twilio.Send(s.msg)
	// The outcome is recorded even if the job's context ends now.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// Accepted: the backup is not needed. Failed for good: the backup is
	// cancelled, as SPEC §3 has a send job end on a permanent error, and
	// stays visible in River UI next to the failed message.
	deleteBackup := func(tx pgx.Tx) error {
		_, err := client.JobDeleteTx(ctx, tx, backupJobID)
		if errors.Is(err, river.ErrNotFound) {
			return nil
		}
		return err
	}
	cancelBackup := func(tx pgx.Tx) error {
		_, err := client.JobCancelTx(ctx, tx, backupJobID)
		if errors.Is(err, river.ErrNotFound) {
			return nil
		}
		return err
	}
	if err == nil {
		w.metrics.TwilioSend(ClassAccepted)
		if err := w.markSent(ctx, d, sid, status, "inline", deleteBackup); err != nil {
			// Twilio has it; a status callback (keyed by ?m=) or the backup
			// job's look-up records the SID.
			log.Warn("send: inline accepted but not recorded; the backup job will look it up", "error", err)
			return
		}
		if d.ReplyToCreatedAt != nil {
			w.metrics.ReplySent(w.now().Sub(*d.ReplyToCreatedAt))
		}
		log.Info("send: accepted", "message_sid", sid, "how", "inline")
		return
	}
	se := Classify(err)
	w.metrics.TwilioSend(se.Class)
	detail := se.detail(1)
	detail["inline"] = true
	switch se.Class {
	case ClassPermanent:
		_, err = w.failPermanent(ctx, log.With("how", "inline"), d, se, cancelBackup)
	case ClassRetry:
		// Twilio did not take it: unsent again, for the backup job.
		err = store.Unclaim(ctx, w.db, d.TenantID, d.MessageID, "send.retry", detail)
		log.Info("send: inline attempt will be retried by the send job", "reason", se.Reason, "error_code", se.Code)
	default:
		err = store.AddEvent(ctx, w.db, d.TenantID, d.MessageID, "send.ambiguous", detail)
		log.Warn("send: inline outcome unknown; the send job will look up before any resend", "reason", se.Reason)
	}
	if err != nil {
		log.Warn("send: could not record the inline outcome; the backup job takes over", "error", err)
	}
}

// inTx runs fn in a transaction of its own.
func (w *SendWorker) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := w.db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// findEarlierSend looks in Twilio's list for a message this one's earlier
// attempt created: same From and To, created since the first claim, same
// body (a template's body is rendered by Twilio, so any body), and not
// already recorded as another message of ours.
func (w *SendWorker) findEarlierSend(ctx context.Context, d store.Delivery, msg Outgoing) (*Sent, error) {
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

// markSent records the SID in a transaction of its own: the row lock keeps a
// status callback that carries the same SID from recording it a second time.
// also runs in the same transaction.
func (w *SendWorker) markSent(ctx context.Context, d store.Delivery, sid, status, how string, also ...func(pgx.Tx) error) error {
	return w.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := store.MarkSent(ctx, tx, d.TenantID, d.MessageID, sid, status, how); err != nil {
			return err
		}
		return runAll(tx, also)
	})
}

// fail ends the message as failed with a reason (and Twilio's code), refunds
// it, and completes the job: there is nothing left to try.
// also runs in the same transaction.
func (w *SendWorker) fail(ctx context.Context, log *slog.Logger, d store.Delivery, code, reason string, also ...func(pgx.Tx) error) (string, error) {
	err := w.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := store.MarkFailed(ctx, tx, d.TenantID, d.MessageID, code, reason); err != nil {
			return err
		}
		return runAll(tx, also)
	})
	if err != nil {
		return "retry", err
	}
	log.Info("send: failed", "reason", reason, "error_code", code)
	return "failed", nil
}

// failPermanent fails d for Twilio's permanent error se; on 21610 (the
// recipient unsubscribed) the contact is opted out in the same transaction.
func (w *SendWorker) failPermanent(ctx context.Context, log *slog.Logger, d store.Delivery, se *SendError, also ...func(pgx.Tx) error) (string, error) {
	if se.Code == 21610 {
		also = append([]func(pgx.Tx) error{func(tx pgx.Tx) error {
			return store.SetContactOptOut(ctx, tx, d.TenantID, d.ContactID, true)
		}}, also...)
	}
	return w.fail(ctx, log, d, se.codeString(), se.Reason, also...)
}

func runAll(tx pgx.Tx, fns []func(pgx.Tx) error) error {
	for _, fn := range fns {
		if err := fn(tx); err != nil {
			return err
		}
	}
	return nil
}
