// Package test holds end-to-end and fault tests: the real notifybridge
// binary, real redis-server processes and real WebSocket clients over
// loopback.
package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/notifybridge/notifybridge/internal/redistest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "notifybridge-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "notifybridge")
	build := exec.Command("go", "build", "-race", "-o", binary, "..")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build notifybridge:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// waitFor polls cond until it returns nil or the deadline passes, then fails
// with the last error (never a bare sleep).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer collects a process's output for assertions and failure reports.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// node is one running notifybridge process.
type node struct {
	t      testing.TB
	args   []string
	env    []string
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	Listen string
	Admin  string
	exit   error
}

// nodeOptions are settings beyond the harness's own (listen, admin_listen).
type nodeOptions struct {
	RedisURL string
	NodeID   string
	Args     []string
	Env      []string
}

func startNode(t testing.TB, o nodeOptions) *node {
	t.Helper()
	n := &node{t: t,
		Listen: "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)),
		Admin:  "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)),
	}
	n.args = []string{"serve", "--listen", n.Listen, "--admin-listen", n.Admin, "--log-level", "debug"}
	if o.RedisURL != "" {
		n.args = append(n.args, "--redis-url", o.RedisURL)
		if !containsAuth(o.Args) {
			n.args = append(n.args, "--auth", "none")
		}
	}
	if o.NodeID == "" {
		o.NodeID = "node-" + strconv.Itoa(redistest.FreePort(t))
	}
	n.args = append(n.args, "--node-id", o.NodeID)
	n.args = append(n.args, o.Args...)
	n.env = o.Env
	n.start()
	t.Cleanup(func() { n.kill() })
	n.waitReady(30 * time.Second)
	return n
}

func containsAuth(args []string) bool {
	for _, a := range args {
		if a == "--auth" || strings.HasPrefix(a, "--auth=") || a == "--jwt-secret" || a == "--jwt-public-key-file" {
			return true
		}
	}
	return false
}

func (n *node) start() {
	n.t.Helper()
	n.out = &syncBuffer{}
	n.cmd = exec.Command(binary, n.args...)
	n.cmd.Env = append(os.Environ(), n.env...)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		n.t.Fatalf("start notifybridge: %v", err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		n.exit = cmd.Wait()
		close(done)
	}(n.cmd, n.done)
}

func (n *node) waitReady(timeout time.Duration) {
	n.t.Helper()
	waitFor(n.t, timeout, "node ready", func() error {
		select {
		case <-n.done:
			return fmt.Errorf("exited: %v\n%s", n.exit, n.out.String())
		default:
		}
		resp, err := http.Get("http://" + n.Admin + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz %d %s", resp.StatusCode, body)
		}
		return nil
	})
}

// kill ends the process with SIGKILL, like a crash.
func (n *node) kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.done
	if n.t.Failed() {
		n.t.Logf("notifybridge %v output:\n%s", n.args, lastLines(n.out.String(), 60))
	}
}

// restart kills the node and starts it again with the same settings.
func (n *node) restart() {
	n.kill()
	n.start()
	n.waitReady(30 * time.Second)
}

// stop sends SIGTERM and waits for the exit, returning the exit error.
func (n *node) stop(timeout time.Duration) error {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
		return n.exit
	case <-time.After(timeout):
		n.t.Fatalf("node did not exit within %v after SIGTERM", timeout)
		return nil
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// frame is one message a client received: an event or a control frame.
type frame struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Data      json.RawMessage `json:"data"`
	Control   string          `json:"control"`
	Last      string          `json:"last"`
	Requested string          `json:"requested"`
	Oldest    string          `json:"oldest"`
	raw       string
}

// client is a WebSocket client that records everything it receives.
type client struct {
	t      testing.TB
	conn   net.Conn
	mu     sync.Mutex
	frames []frame
	closed error // set when the reader stops
	code   ws.StatusCode
	done   chan struct{}
}

// dial connects to n's /ws with the raw query (e.g. "user=1&groups=a").
func dial(t testing.TB, addr, query string, header http.Header) *client {
	t.Helper()
	c, err := tryDial(t, addr, query, header)
	if err != nil {
		t.Fatalf("dial %s?%s: %v", addr, query, err)
	}
	return c
}

func tryDial(t testing.TB, addr, query string, header http.Header) (*client, error) {
	d := ws.Dialer{Timeout: 5 * time.Second}
	if header != nil {
		d.Header = ws.HandshakeHeaderHTTP(header)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, "ws://"+addr+"/ws?"+query)
	if err != nil {
		return nil, err
	}
	c := &client{t: t, conn: conn, done: make(chan struct{})}
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	go c.read(r)
	t.Cleanup(func() { c.close() })
	return c, nil
}

func (c *client) read(r io.Reader) {
	defer close(c.done)
	rw := struct {
		io.Reader
		io.Writer
	}{r, c.conn}
	for {
		msgs, err := wsutil.ReadServerMessage(rw, nil)
		for _, m := range msgs {
			switch m.OpCode {
			case ws.OpText:
				var f frame
				if jerr := json.Unmarshal(m.Payload, &f); jerr != nil {
					f.Control = "unparseable"
				}
				f.raw = string(m.Payload)
				c.mu.Lock()
				c.frames = append(c.frames, f)
				c.mu.Unlock()
			case ws.OpClose:
				code, _ := ws.ParseCloseFrameData(m.Payload)
				c.mu.Lock()
				c.code = code
				c.mu.Unlock()
			}
		}
		if err != nil {
			c.mu.Lock()
			c.closed = err
			var ce wsutil.ClosedError
			if errors.As(err, &ce) {
				c.code = ce.Code
			}
			c.mu.Unlock()
			return
		}
	}
}

func (c *client) close() {
	_ = c.conn.Close()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
}

// snapshot returns what the client got so far.
func (c *client) snapshot() []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]frame(nil), c.frames...)
}

// events returns the ids of event frames received so far.
func (c *client) events() []string {
	var ids []string
	for _, f := range c.snapshot() {
		if f.ID != "" {
			ids = append(ids, f.ID)
		}
	}
	return ids
}

// waitControl waits for the first control frame of kind and returns it.
func (c *client) waitControl(kind string, timeout time.Duration) frame {
	c.t.Helper()
	var got frame
	waitFor(c.t, timeout, "control frame "+kind, func() error {
		for _, f := range c.snapshot() {
			if f.Control == kind {
				got = f
				return nil
			}
		}
		return fmt.Errorf("frames so far: %v", c.describe())
	})
	return got
}

// waitEvents waits until the client has exactly want event ids (in order).
func (c *client) waitEvents(want []string, timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, "events", func() error {
		got := c.events()
		if len(got) < len(want) {
			return fmt.Errorf("got %d of %d events: %v", len(got), len(want), c.describe())
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			c.t.Fatalf("events = %v, want %v", got, want)
		}
		return nil
	})
}

// waitClosed waits for the connection to end and returns the close code.
func (c *client) waitClosed(timeout time.Duration) ws.StatusCode {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.t.Fatalf("connection not closed within %v; frames: %v", timeout, c.describe())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code
}

func (c *client) describe() string {
	var parts []string
	for _, f := range c.snapshot() {
		parts = append(parts, f.raw)
	}
	if len(parts) > 20 {
		parts = append(parts[:10], append([]string{"…"}, parts[len(parts)-10:]...)...)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// handshake performs a raw upgrade request and returns status and body, for
// refusal tests.
func handshake(t testing.TB, addr, query string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+"/ws?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, ""
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body)
}

// runCLI runs the binary with args and returns its combined output.
func runCLI(t testing.TB, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
	return string(out), err
}

var embeddedURL = regexp.MustCompile(`redis://127\.0\.0\.1:\d+`)
