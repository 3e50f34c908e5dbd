// Package pgcluster runs a private Postgres cluster for a harness: initdb in
// a directory of its own, its own port, so restarting it or reading its
// statistics touches no one else on the machine. The chaos suite restarts
// one; the benchmark reads pg_stat_statements and the server's CPU counters
// from one. It may import only the standard library.
package pgcluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// Cluster is a Postgres cluster the caller owns. It runs as the "postgres"
// OS user when the caller runs as root (initdb refuses root).
type Cluster struct {
	dir      string
	port     int
	bin      string
	as       string // OS user to run as; "" = the current one
	settings []string
}

// Options configure Start.
type Options struct {
	// Bin is the directory of the Postgres binaries; "" asks pg_config.
	Bin string
	// Settings are extra server settings, "name=value" each (passed as -c).
	Settings []string
}

// Start creates a cluster under dir (in dir/pgdata) and starts it.
func Start(ctx context.Context, dir string, opts Options) (*Cluster, error) {
	bin := opts.Bin
	if bin == "" {
		out, err := exec.CommandContext(ctx, "pg_config", "--bindir").Output()
		if err != nil {
			return nil, fmt.Errorf("find Postgres binaries (pg_config --bindir): %w", err)
		}
		bin = strings.TrimSpace(string(out))
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: filepath.Join(dir, "pgdata"), port: port, bin: bin, settings: opts.Settings}
	if os.Geteuid() == 0 {
		c.as = "postgres"
		u, err := user.Lookup(c.as)
		if err != nil {
			return nil, fmt.Errorf("initdb cannot run as root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			return nil, err
		}
		for _, d := range []string{dir, c.dir} {
			if err := os.Chown(d, uid, gid); err != nil {
				return nil, err
			}
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, err
		}
	}
	if err := c.run(ctx, "initdb", "-D", c.dir, "-A", "trust", "-U", "root", "--no-sync"); err != nil {
		return nil, err
	}
	return c, c.start(ctx)
}

func (c *Cluster) run(ctx context.Context, tool string, args ...string) error {
	name := filepath.Join(c.bin, tool)
	if c.as != "" {
		args = append([]string{"-u", c.as, "--", name}, args...)
		name = "runuser"
	}
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", tool, err, out)
	}
	return nil
}

func (c *Cluster) start(ctx context.Context) error {
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s -c max_connections=200", c.port, c.dir)
	for _, s := range c.settings {
		opts += " -c " + s
	}
	return c.run(ctx, "pg_ctl", "-D", c.dir, "-o", opts, "-l", filepath.Join(c.dir, "server.log"), "-w", "start")
}

// Restart stops the cluster the way a crash would (immediate: no
// checkpoint, every connection cut) and starts it again.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.run(ctx, "pg_ctl", "-D", c.dir, "-m", "immediate", "-w", "stop"); err != nil {
		return err
	}
	return c.start(ctx)
}

// Stop stops the cluster at once.
func (c *Cluster) Stop() {
	_ = c.run(context.Background(), "pg_ctl", "-D", c.dir, "-m", "immediate", "-w", "stop")
}

// AdminURL is a connection URL to the cluster's "postgres" database as its
// superuser, root.
func (c *Cluster) AdminURL() string {
	return fmt.Sprintf("postgres://root@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// PostmasterPID is the running server's process id (the first line of
// postmaster.pid); every backend is its child.
func (c *Cluster) PostmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("postmaster pid: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
