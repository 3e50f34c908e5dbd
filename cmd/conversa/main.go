// Command conversa is the Conversa service: Twilio webhooks, the operator
// API and River UI over HTTP, and the River workers that answer and deliver
// messages. main only calls run; everything is wired there.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gin-gonic/gin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program: it parses args, runs one command and returns the
// process exit code. Tests call it directly.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	gin.SetMode(gin.ReleaseMode)
	cmd, err := parseCLI(args, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "conversa: %v\n", err)
		return 2
	}
	if cmd == nil { // --help was printed
		return 0
	}
	cfg, err := loadConfig(lookupEnv)
	if err != nil {
		fmt.Fprintf(stderr, "conversa: bad configuration: %s\n", oneLine(err))
		return 2
	}
	if err := cmd.Run(ctx, &app{cfg: cfg, stdout: stdout, stderr: stderr, lookupEnv: lookupEnv}); err != nil {
		fmt.Fprintf(stderr, "conversa: %s\n", oneLine(err))
		return 1
	}
	return 0
}

// app is what every command gets: configuration and the output streams.
type app struct {
	cfg       config
	stdout    io.Writer
	stderr    io.Writer
	lookupEnv func(string) (string, bool)
}
