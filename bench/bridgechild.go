package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// child is a bridge started by bench with the embedded Redis.
type child struct {
	cmd                       *exec.Cmd
	wsURL, redisURL, adminURL string
	done                      chan struct{}
	log                       *tailBuffer // the child's last log lines, for errors
	found                     chan string // the embedded Redis address, once logged
}

func startChild(ctx context.Context, o Options) (*child, error) {
	c, err := launchChild(o, "bench-"+runID())
	if err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// launchChild starts the bridge process under nodeID (its consumer group is
// notifybridge-<nodeID>) and returns once it runs, not once it is ready:
// the ingest scenario times catch-up from this moment.
func launchChild(o Options, nodeID string) (*child, error) {
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	bin := o.Binary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	// The child's node id is the run's own too: its consumer group never
	// meets another run's or a production node's on a shared Redis.
	args := []string{"serve", "--listen", listen, "--admin-listen", admin, "--log-level", "info",
		"--stream", o.Stream, "--node-id", nodeID}
	if o.RedisURL != "" {
		args = append(args, "--redis-url", o.RedisURL)
		if !hasFlag(o.Extra, "auth", "jwt-secret", "jwt-public-key-file") {
			args = append(args, "--auth", "none") // bench clients name themselves with ?user=
		}
	}
	args = append(args, o.Extra...) // last, so they win
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), o.Env...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, wsURL: "ws://" + listen + "/ws", adminURL: "http://" + admin, redisURL: o.RedisURL,
		done: make(chan struct{}), log: &tailBuffer{}}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			_, _ = c.log.Write(append(sc.Bytes(), '\n'))
			if m := embeddedRe.FindString(sc.Text()); m != "" && !sent {
				found <- m
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pr) // never block the child on a full pipe
	}()
	go func() { _ = cmd.Wait(); _ = pw.Close(); close(c.done) }()
	c.found = found
	return c, nil
}

// waitReady waits for the embedded Redis address (when the child has no
// redis_url) and then for /readyz.
func (c *child) waitReady(ctx context.Context) error {
	found := c.found
	if c.redisURL == "" {
		select {
		case u := <-found:
			c.redisURL = u
		case <-c.done:
			return fmt.Errorf("bridge child exited before it started:\n%s", c.log)
		case <-time.After(30 * time.Second):
			c.stop()
			return errors.New("bridge child did not log its embedded redis address within 30s")
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(c.adminURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			c.stop()
			return fmt.Errorf("bridge child not ready within 60s:\n%s", c.log)
		}
		select {
		case <-c.done:
			return fmt.Errorf("bridge child exited before it was ready:\n%s", c.log)
		case <-ctx.Done():
			c.stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func hasFlag(args []string, names ...string) bool {
	for _, a := range args {
		for _, n := range names {
			if a == "--"+n || strings.HasPrefix(a, "--"+n+"=") || a == "-"+n || strings.HasPrefix(a, "-"+n+"=") {
				return true
			}
		}
	}
	return false
}

var embeddedRe = regexp.MustCompile(`redis://127\.0\.0\.1:\d+`)

func (c *child) stop() {
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
