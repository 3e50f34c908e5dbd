package chaos

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/testdb"
)

// logWriter sends the harness's progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestChaos runs the real binaries under faults and checks the promise.
// In `make test` it is the reduced run; CHAOS_FULL=1 (`make chaos`) runs the
// full size, CHAOS_PG_RESTART=1 adds a Postgres restart on a private
// cluster, and CHAOS_DEBOUNCE (e.g. 1500ms) sets the processes' DEBOUNCE.
func TestChaos(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("chaos run: not in -short")
	}
	faults := faketwilio.Rates{RateLimit: 0.05, ServerError: 0.03, AcceptThenHang: 0.01, Permanent: 0.005, Undelivered: 0.005}
	cfg := Config{
		AdminURL: testdb.AdminURL(), Out: logWriter{t},
		Messages: 300, Rate: 10, Contacts: 40, Numbers: 3, Redeliver: 0.10,
		Workers: 2, WorkerKill: 2, ServeKill: 1, RedisDown: 3 * time.Second,
		Faults: faults, Drain: 90 * time.Second,
		// Besides those lost while serve is down: reconciliation settles them.
		CallbackLoss: 0.05, ReconcileAfter: 3 * time.Second,
		Inject: []faketwilio.Fault{
			{Kind: faketwilio.FaultAcceptThenHang, Times: 2},
			{Kind: faketwilio.FaultAcceptThenDrop},
			{Kind: faketwilio.FaultError, Code: 21211},
		},
	}
	if os.Getenv("CHAOS_FULL") == "1" {
		cfg.Messages, cfg.Rate, cfg.Contacts, cfg.Numbers = 2000, 20, 200, 4
		cfg.WorkerKill, cfg.ServeKill, cfg.RedisDown = 4, 1, 10*time.Second
		cfg.Drain = 3 * time.Minute
	}
	cfg.PGRestart = os.Getenv("CHAOS_PG_RESTART") == "1"
	if d, err := time.ParseDuration(os.Getenv("CHAOS_DEBOUNCE")); err == nil {
		cfg.Debounce = d
	}

	dir, err := os.MkdirTemp("", "conversa-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("chaos run failed (logs in %s): %v", dir, err)
	}
	t.Logf("\n%s", rep)
	if len(rep.Violations) > 0 {
		t.Fatalf("%d violations of the promise (process logs in %s)", len(rep.Violations), dir)
	}
	_ = os.RemoveAll(dir)
}
