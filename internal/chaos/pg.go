package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
)

// privatePG is a Postgres cluster the harness owns (initdb in its own
// directory, its own port), so restarting it hurts no one else on the
// machine. It runs as the "postgres" OS user when the harness runs as root
// (initdb refuses root).
type privatePG struct {
	dir  string
	port int
	bin  string
	as   string // OS user to run as; "" = the current one
}

// startPrivatePG creates and starts a cluster under dir and returns it.
func startPrivatePG(ctx context.Context, dir string) (*privatePG, error) {
	bin := os.Getenv("CHAOS_PG_BIN")
	if bin == "" {
		out, err := exec.CommandContext(ctx, "pg_config", "--bindir").Output()
		if err != nil {
			return nil, fmt.Errorf("find Postgres binaries (set CHAOS_PG_BIN): %w", err)
		}
		bin = string(out[:len(out)-1])
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &privatePG{dir: filepath.Join(dir, "pgdata"), port: port, bin: bin}
	if os.Geteuid() == 0 {
		p.as = "postgres"
		u, err := user.Lookup(p.as)
		if err != nil {
			return nil, fmt.Errorf("initdb cannot run as root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.MkdirAll(p.dir, 0o700); err != nil {
			return nil, err
		}
		for _, d := range []string{dir, p.dir} {
			if err := os.Chown(d, uid, gid); err != nil {
				return nil, err
			}
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, err
		}
	}
	if err := p.run(ctx, "initdb", "-D", p.dir, "-A", "trust", "-U", "root", "--no-sync"); err != nil {
		return nil, err
	}
	return p, p.start(ctx)
}

func (p *privatePG) run(ctx context.Context, tool string, args ...string) error {
	name := filepath.Join(p.bin, tool)
	if p.as != "" {
		args = append([]string{"-u", p.as, "--", name}, args...)
		name = "runuser"
	}
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", tool, err, out)
	}
	return nil
}

func (p *privatePG) start(ctx context.Context) error {
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s -c max_connections=200 -c fsync=off", p.port, p.dir)
	return p.run(ctx, "pg_ctl", "-D", p.dir, "-o", opts, "-l", filepath.Join(p.dir, "server.log"), "-w", "start")
}

// restart stops the cluster the way a crash would (immediate: no
// checkpoint, every connection cut) and starts it again.
func (p *privatePG) restart(ctx context.Context) error {
	if err := p.run(ctx, "pg_ctl", "-D", p.dir, "-m", "immediate", "-w", "stop"); err != nil {
		return err
	}
	return p.start(ctx)
}

func (p *privatePG) stop() {
	_ = p.run(context.Background(), "pg_ctl", "-D", p.dir, "-m", "immediate", "-w", "stop")
}

func (p *privatePG) adminURL() string {
	return fmt.Sprintf("postgres://root@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}
