package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/alecthomas/kong"
)

// command is one parsed subcommand, ready to run.
type command interface {
	Run(ctx context.Context, a *app) error
}

// cli is the command line.
type cli struct {
	Run     runCmd     `cmd:"" default:"1" help:"Migrate, then serve HTTP and work jobs in one process."`
	Serve   serveCmd   `cmd:"" help:"HTTP only (webhooks, API, River UI, metrics); inserts jobs, works none."`
	Work    workCmd    `cmd:"" help:"River workers only, with /healthz and /metrics on WORKER_HTTP_ADDR."`
	Migrate migrateCmd `cmd:"" help:"Apply our migrations and River's, idempotently."`
	Tenant  struct {
		Create tenantCreateCmd `cmd:"" help:"Create a tenant; prints its id and API key."`
	} `cmd:"" help:"Manage tenants."`
	Account struct {
		Add accountAddCmd `cmd:"" help:"Add a Twilio account and its numbers to a tenant."`
	} `cmd:"" help:"Manage Twilio accounts."`
	Credits struct {
		Add creditsAddCmd `cmd:"" help:"Add credits to a tenant; prints the new balance."`
	} `cmd:"" help:"Manage credits."`
	Contact struct {
		Erase contactEraseCmd `cmd:"" help:"Erase a contact's personal data (as DELETE /tenants/{id}/contacts/{address})."`
	} `cmd:"" help:"Manage contacts."`
	Broadcast struct {
		Send broadcastSendCmd `cmd:"" help:"Send one message to many (as POST /tenants/{id}/broadcasts) and show its progress until every message has a final status."`
	} `cmd:"" help:"Broadcasts: proactive messages to many contacts."`
	Demo demoCmd `cmd:"" help:"Send a signed demo message to a running server and print the reply and its delivery."`
}

// errHelp stops parsing once kong has printed help.
var errHelp = errors.New("help printed")

// parseCLI parses args into the command to run; (nil, nil) after --help.
func parseCLI(args []string, stdout, stderr io.Writer) (cmd command, err error) {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("conversa"),
		kong.Description("Conversa connects Twilio numbers (SMS, WhatsApp) to AI agents. Configuration comes from the environment (see README)."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(int) { panic(errHelp) }),
	)
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			if r != errHelp { //nolint:errorlint // our own sentinel, by identity
				panic(r)
			}
			cmd, err = nil, nil
		}
	}()
	kctx, err := parser.Parse(args)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "conversa: "))
	}
	switch kctx.Command() {
	case "run":
		return &c.Run, nil
	case "serve":
		return &c.Serve, nil
	case "work":
		return &c.Work, nil
	case "migrate":
		return &c.Migrate, nil
	case "tenant create":
		return &c.Tenant.Create, nil
	case "account add":
		return &c.Account.Add, nil
	case "credits add":
		return &c.Credits.Add, nil
	case "contact erase <address>":
		return &c.Contact.Erase, nil
	case "broadcast send":
		return &c.Broadcast.Send, nil
	case "demo":
		return &c.Demo, nil
	}
	return nil, fmt.Errorf("unknown command %q", kctx.Command())
}

// oneLine flattens a (possibly joined) error onto one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
