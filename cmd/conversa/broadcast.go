package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/schollz/progressbar/v3"

	"github.com/conversa/conversa/jobs/jobargs"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/api"
)

type broadcastSendCmd struct {
	Tenant           string `required:"" help:"Tenant id."`
	From             string `required:"" help:"The sending number, one of the tenant's: +15005550006 or whatsapp:+14155238886."`
	ContentSID       string `name:"content-sid" help:"The WhatsApp template (Twilio Content SID, HX...)."`
	ContentVariables string `name:"content-variables" help:"The template's variables as a JSON object, e.g. {\"1\":\"Friday\"}."`
	Body             string `help:"The text of an SMS broadcast (instead of --content-sid)."`
	Name             string `help:"A name for the broadcast."`
	ToFile           string `name:"to-file" required:"" help:"CSV of recipients: one number per line, or in the first column; a header line is skipped."`
	JSON             bool   `name:"json" help:"Print one JSON object at the end."`
}

// broadcastPoll is how often the progress bar reads the broadcast's counts.
const broadcastPoll = 500 * time.Millisecond

// flagOf names the flag a broadcast's field comes from.
var flagOf = map[string]string{
	"name": "--name", "from": "--from", "body": "--body", "content_sid": "--content-sid",
	"content_variables": "--content-variables", "to": "--to-file",
}

// Run creates the broadcast as POST /tenants/{id}/broadcasts does, through
// the same function, then shows its progress until every message is
// settled (a final status, or given up by reconciliation) and prints the
// counts. The messages are sent by the workers of a running `conversa run`
// or `conversa work`.
func (c *broadcastSendCmd) Run(ctx context.Context, a *app) error {
	in, err := api.NewBroadcastInput()
	if err != nil {
		return err
	}
	defer in.Close() //nolint:errcheck // a temporary file
	in.Name, in.From, in.Body, in.ContentSID = c.Name, c.From, c.Body, c.ContentSID
	if c.ContentVariables != "" {
		if err := json.Unmarshal([]byte(c.ContentVariables), &in.ContentVariables); err != nil || in.ContentVariables == nil {
			return errors.New(`--content-variables: want a JSON object of strings, e.g. {"1":"Friday"}`)
		}
	}
	if err := readRecipients(c.ToFile, in); err != nil {
		return err
	}

	pool, err := a.openPool(ctx, false, 4)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := store.GetTenant(ctx, pool, c.Tenant); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no tenant with id %q", c.Tenant)
	} else if err != nil {
		return err
	}
	// Insert-only: the workers of a running server send the messages. The
	// sends due within seconds insert "available", as the server's do.
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: slog.New(slog.DiscardHandler),
		Middleware: []rivertype.Middleware{&jobargs.ShortDelayMiddleware{MaxDelay: 5 * time.Second, Now: time.Now}}})
	if err != nil {
		return fmt.Errorf("river client: %w", err)
	}
	answer, err := api.CreateBroadcast(ctx, pool, rc, c.Tenant, in, api.BroadcastOptions{})
	var fe *api.FieldError
	if errors.As(err, &fe) {
		return fmt.Errorf("%s: %s", flagOf[fe.Field], store.RefusalReason(err))
	}
	if err != nil {
		return err
	}
	if !c.JSON {
		fmt.Fprintf(a.stdout, "broadcast %d: %d recipients, %d queued, %d skipped (opted out), %d invalid\n",
			answer.ID, answer.Recipients, answer.Queued, answer.SkippedOptedOut, len(answer.Invalid))
		for _, bad := range answer.Invalid {
			fmt.Fprintf(a.stdout, "invalid, not sent: %s\n", bad)
		}
	}

	tally, err := waitSettled(ctx, pool, answer.ID, answer.Queued, a.stderr)
	if err != nil {
		return err
	}
	if c.JSON {
		return a.print(true, map[string]any{"id": answer.ID, "recipients": answer.Recipients, "queued": answer.Queued,
			"skipped_opted_out": answer.SkippedOptedOut, "invalid": answer.Invalid, "counts": tally.Counts}, "")
	}
	statuses := make([]string, 0, len(tally.Counts))
	for s := range tally.Counts {
		statuses = append(statuses, string(s))
	}
	sort.Strings(statuses)
	for _, s := range statuses {
		fmt.Fprintf(a.stdout, "%-12s %d\n", s, tally.Counts[store.MessageStatus(s)])
	}
	return nil
}

// readRecipients adds the file's addresses to in: the first column of each
// CSV record, blank lines skipped, and a first line without a digit taken
// for a header.
func readRecipients(path string, in *api.BroadcastInput) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--to-file: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord, r.LazyQuotes, r.TrimLeadingSpace, r.ReuseRecord = -1, true, true, true
	for line := 1; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("--to-file: %w", err)
		}
		first := strings.TrimSpace(rec[0])
		if first == "" || (line == 1 && !strings.ContainsAny(first, "0123456789")) {
			continue
		}
		if err := in.AddTo(first); err != nil {
			var fe *api.FieldError
			if errors.As(err, &fe) {
				return fmt.Errorf("--to-file: %s", store.RefusalReason(err))
			}
			return err
		}
	}
}

// waitSettled shows a progress bar on w until all queued messages of the
// broadcast are settled, and returns its last counts.
func waitSettled(ctx context.Context, db store.DBTX, id int64, queued int, w io.Writer) (store.BroadcastTally, error) {
	bar := progressbar.NewOptions(queued,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(fmt.Sprintf("broadcast %d", id)),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
	tick := time.NewTicker(broadcastPoll)
	defer tick.Stop()
	for {
		t, err := store.TallyBroadcast(ctx, db, id)
		if err != nil {
			return t, err
		}
		_ = bar.Set(t.Settled)
		if t.Settled >= queued {
			_ = bar.Finish()
			return t, nil
		}
		select {
		case <-ctx.Done():
			return t, fmt.Errorf("stopped waiting (the broadcast goes on; GET /api/v1/broadcasts/%d shows it): %w", id, ctx.Err())
		case <-tick.C:
		}
	}
}
