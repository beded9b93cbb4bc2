// Package e2e is the harness of the end-to-end and fault suites (test/,
// test/fault/): it builds the real notifybridge binary, runs nodes on free
// loopback ports and connects real WebSocket clients that record every frame.
// Every wait has a deadline; every process it starts is killed when the test
// ends, also on failure.
package e2e

import (
	"bufio"
	"bytes"
	"context"
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

	"github.com/notifybridge/notifybridge/internal/conntest"
	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/notifybridge/notifybridge/internal/testwait"
)

// Binary is the notifybridge executable under test, set by Main.
var Binary string

// Main builds the binary (with -race) from the module root modRoot, runs the
// tests and removes the build. Call it from TestMain.
//
// NB_BINARY names a binary built beforehand instead (CI builds it once for
// every suite; a developer may test a build of another checkout).
func Main(m *testing.M, modRoot string) {
	if b := os.Getenv("NB_BINARY"); b != "" {
		Binary = b
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "notifybridge-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	Binary = filepath.Join(dir, "notifybridge")
	build := exec.Command("go", "build", "-race", "-o", Binary, modRoot)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build notifybridge:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// WaitFor polls cond until it returns nil or the deadline passes, then fails
// with the last error (never a bare sleep).
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	testwait.For(t, timeout, what, cond)
}

// SyncBuffer collects a process's output for assertions and failure reports.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Node is one running notifybridge process.
type Node struct {
	t      testing.TB
	args   []string
	env    []string
	cmd    *exec.Cmd
	Out    *SyncBuffer
	done   chan struct{}
	Listen string
	Admin  string
	exit   error
}

// NodeOptions are settings beyond the harness's own (listen, admin_listen).
type NodeOptions struct {
	RedisURL string
	NodeID   string
	Args     []string
	Env      []string
	// NoWait returns once the process runs, without waiting for /readyz
	// (for tests of a node that cannot be ready yet).
	NoWait bool
}

func StartNode(t testing.TB, o NodeOptions) *Node {
	t.Helper()
	n := &Node{t: t,
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
	n.Start()
	t.Cleanup(func() { n.Kill() })
	if !o.NoWait {
		n.WaitReady(30 * time.Second)
	}
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

func (n *Node) Start() {
	n.t.Helper()
	n.Out = &SyncBuffer{}
	n.cmd = exec.Command(Binary, n.args...)
	n.cmd.Env = append(os.Environ(), n.env...)
	n.cmd.Stdout, n.cmd.Stderr = n.Out, n.Out
	if err := n.cmd.Start(); err != nil {
		n.t.Fatalf("start notifybridge: %v", err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		n.exit = cmd.Wait()
		close(done)
	}(n.cmd, n.done)
}

func (n *Node) WaitReady(timeout time.Duration) {
	n.t.Helper()
	WaitFor(n.t, timeout, "node ready", func() error {
		select {
		case <-n.done:
			return fmt.Errorf("exited: %v\n%s", n.exit, n.Out.String())
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

// Kill ends the process with SIGKILL, like a crash.
func (n *Node) Kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.done
	if n.t.Failed() {
		n.t.Logf("notifybridge %v output:\n%s", n.args, LastLines(n.Out.String(), 60))
	}
}

// Exited is closed once the process has ended.
func (n *Node) Exited() <-chan struct{} { return n.done }

// Restart kills the node and starts it again with the same settings.
func (n *Node) Restart() {
	n.Kill()
	n.Start()
	n.WaitReady(30 * time.Second)
}

// Stop sends SIGTERM and waits for the exit, returning the exit error.
func (n *Node) Stop(timeout time.Duration) error {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
		return n.exit
	case <-time.After(timeout):
		n.t.Fatalf("node did not exit within %v after SIGTERM", timeout)
		return nil
	}
}

func LastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Frame is one message a client received: an event or a control frame
// (Raw holds the payload as received).
type Frame = conntest.Frame

// Client is a WebSocket client that records everything it receives.
type Client struct {
	t      testing.TB
	conn   net.Conn
	mu     sync.Mutex
	frames []Frame
	closed error // set when the reader stops
	code   ws.StatusCode
	reason string // of the close frame received
	done   chan struct{}
	wmu    sync.Mutex // serializes the reader's pongs
}

// Dial connects to n's /ws with the raw query (e.g. "user=1&groups=a").
func Dial(t testing.TB, addr, query string, header http.Header) *Client {
	t.Helper()
	c, err := TryDial(t, addr, query, header)
	if err != nil {
		t.Fatalf("dial %s?%s: %v", addr, query, err)
	}
	return c
}

func TryDial(t testing.TB, addr, query string, header http.Header) (*Client, error) {
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
	c := &Client{t: t, conn: conn, done: make(chan struct{})}
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	go c.read(r)
	t.Cleanup(func() { c.Close() })
	return c, nil
}

func (c *Client) read(r io.Reader) {
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
				f, _ := conntest.Parse(m.Payload) // a bad one is kept as "unparseable"
				c.mu.Lock()
				c.frames = append(c.frames, f)
				c.mu.Unlock()
			case ws.OpPing:
				// Answer like a browser does, so an idle harness client is
				// not closed as a dead peer after two ping intervals.
				c.wmu.Lock()
				_ = wsutil.WriteClientMessage(c.conn, ws.OpPong, m.Payload)
				c.wmu.Unlock()
			case ws.OpClose:
				code, reason := ws.ParseCloseFrameData(m.Payload)
				c.mu.Lock()
				c.code, c.reason = code, reason
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

// Conn is the underlying connection, for tests that write frames themselves.
func (c *Client) Conn() net.Conn { return c.conn }

// Done is closed once the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Reason is the close frame's reason ("" while open or without one).
func (c *Client) Reason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// Code is the close code received (0 while open or without a close frame).
func (c *Client) Code() ws.StatusCode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code
}

// Close closes the connection and waits briefly for the reader to stop.
func (c *Client) Close() {
	_ = c.conn.Close()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
}

// Snapshot returns what the client got so far.
func (c *Client) Snapshot() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.frames...)
}

// Events returns the ids of event frames received so far.
func (c *Client) Events() []string { return conntest.Frames(c.Snapshot()).IDs() }

// WaitControl waits for the first control frame of kind and returns it.
func (c *Client) WaitControl(kind string, timeout time.Duration) Frame {
	c.t.Helper()
	var got Frame
	WaitFor(c.t, timeout, "control frame "+kind, func() error {
		for _, f := range c.Snapshot() {
			if f.Control == kind {
				got = f
				return nil
			}
		}
		return fmt.Errorf("frames so far: %v", c.Describe())
	})
	return got
}

// WaitEvents waits until the client has exactly want event ids (in order).
func (c *Client) WaitEvents(want []string, timeout time.Duration) {
	c.t.Helper()
	WaitFor(c.t, timeout, "Events", func() error {
		got := c.Events()
		if len(got) < len(want) {
			return fmt.Errorf("got %d of %d Events: %v", len(got), len(want), c.Describe())
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			c.t.Fatalf("Events = %v, want %v", got, want)
		}
		return nil
	})
}

// WaitClosed waits for the connection to end and returns the close code.
func (c *Client) WaitClosed(timeout time.Duration) ws.StatusCode {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.t.Fatalf("connection not closed within %v; frames: %v", timeout, c.Describe())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code
}

func (c *Client) Describe() string {
	var parts []string
	for _, f := range c.Snapshot() {
		parts = append(parts, f.Raw)
	}
	if len(parts) > 20 {
		parts = append(parts[:10], append([]string{"…"}, parts[len(parts)-10:]...)...)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// Handshake performs a raw upgrade request and returns status and body, for
// refusal tests.
func Handshake(t testing.TB, addr, query string, header http.Header) (int, string) {
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

// RunCLI runs the binary with args and returns its combined output.
func RunCLI(t testing.TB, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, Binary, args...).CombinedOutput()
	return string(out), err
}

// EmbeddedURL finds the embedded Redis address in a serve log.
var EmbeddedURL = regexp.MustCompile(`redis://127\.0\.0\.1:\d+`)
