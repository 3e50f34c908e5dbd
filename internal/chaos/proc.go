package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one OS process the harness owns: started in its own process group
// so a SIGKILL takes it and anything it started, and logged to a file.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	log  string
	// ready is a URL answering 200 once the process is up, or tcp://host:port
	// accepting connections (empty: none).
	ready string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// waitReady polls the ready URL until it answers 200.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration) error {
	if p.ready == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	for {
		p.mu.Lock()
		done := p.done
		p.mu.Unlock()
		select {
		case <-done:
			return fmt.Errorf("%s exited before it was ready (see %s)", p.name, p.log)
		default:
		}
		if host, ok := strings.CutPrefix(p.ready, "tcp://"); ok {
			if c, err := net.DialTimeout("tcp", host, time.Second); err == nil {
				_ = c.Close()
				return nil
			}
		} else if resp, err := hc.Get(p.ready); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s (see %s)", p.name, timeout, p.log)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// signal sends sig to the process group and, for SIGKILL, waits for the exit.
func (p *proc) signal(sig syscall.Signal, wait time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
	case <-time.After(wait):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func (p *proc) kill() { p.signal(syscall.SIGKILL, 10*time.Second) }

// stop asks for a graceful shutdown, then kills.
func (p *proc) stop() { p.signal(syscall.SIGTERM, 20*time.Second) }

// freePort returns a loopback port nobody listens on right now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// buildBinary builds cmd/conversa into dir.
func buildBinary(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "conversa")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/conversa/conversa/cmd/conversa")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %w: %s", err, out)
	}
	return bin, nil
}

// runOnce runs the binary to completion and returns its stdout.
func runOnce(ctx context.Context, bin string, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stderr []byte
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		stderr = ee.Stderr
	}
	if err != nil {
		return nil, fmt.Errorf("conversa %v: %w: %s", args[:min(2, len(args))], err, stderr)
	}
	return out, nil
}
