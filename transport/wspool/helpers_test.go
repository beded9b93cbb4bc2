package wspool

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// eventually is the shared bounded wait (internal/testwait).
func eventually(t testing.TB, d time.Duration, fn func() error) {
	t.Helper()
	testwait.For(t, d, "condition", fn)
}

// startServer builds and starts a pool that is closed when the test ends.
func startServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// testSource is a slice of frames behind a mutex.
type testSource struct {
	mu     sync.Mutex
	frames [][]byte
	closed atomic.Int32
}

func (s *testSource) Pull(bufs [][]byte, maxBytes int) [][]byte {
	s.mu.Lock()
	n := 0
	for len(s.frames) > 0 && (n == 0 || n < maxBytes) {
		bufs = append(bufs, s.frames[0])
		n += len(s.frames[0])
		s.frames = s.frames[1:]
	}
	s.mu.Unlock()
	return bufs
}

func (s *testSource) Closed() { s.closed.Add(1) }

func (s *testSource) push(frames ...[]byte) {
	s.mu.Lock()
	s.frames = append(s.frames, frames...)
	s.mu.Unlock()
}

type countHooks struct {
	opened, closed, refused, frames, bytes, writeErrs, slow atomic.Int64
	mu                                                      sync.Mutex
	codes                                                   []int
	reasons                                                 []string
}

func (h *countHooks) ConnOpened() { h.opened.Add(1) }
func (h *countHooks) ConnClosed(code int) {
	h.closed.Add(1)
	h.mu.Lock()
	h.codes = append(h.codes, code)
	h.mu.Unlock()
}
func (h *countHooks) HandshakeRefused(status int, reason string) {
	h.refused.Add(1)
	h.mu.Lock()
	h.reasons = append(h.reasons, fmt.Sprint(status, " ", reason))
	h.mu.Unlock()
}
func (h *countHooks) FramesWritten(f, b int) { h.frames.Add(int64(f)); h.bytes.Add(int64(b)) }
func (h *countHooks) WriteError()            { h.writeErrs.Add(1) }
func (h *countHooks) SlowClosed(string)      { h.slow.Add(1) }

type accepted struct {
	req Request
	src *testSource
}

type harness struct {
	t     testing.TB
	s     *Server
	hooks *countHooks
	mu    sync.Mutex
	conns map[string]*accepted
}

func newHarness(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, hooks: &countHooks{}, conns: map[string]*accepted{}}
	cfg := Config{
		Listen:       "127.0.0.1:0",
		Auth:         NewNoneAuthenticator(),
		ValidateName: bridge.ValidateName,
		Hooks:        h.hooks,
		Accept: func(r *Request) (Source, error) {
			if r.Query.Get("fail") != "" {
				return nil, errors.New("bad resume: " + r.Query.Get("fail"))
			}
			a := &accepted{req: *r, src: &testSource{}}
			h.mu.Lock()
			h.conns[r.Identity.User] = a
			h.mu.Unlock()
			return a.src, nil
		},
		HandshakeTimeout: 2 * time.Second,
		CloseGrace:       200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	h.s = startServer(t, cfg)
	return h
}

func (h *harness) addr() string { return h.s.Addr().String() }

func (h *harness) conn(user string) *accepted {
	h.t.Helper()
	var a *accepted
	eventually(h.t, 2*time.Second, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if a = h.conns[user]; a == nil {
			return fmt.Errorf("no connection for %q", user)
		}
		return nil
	})
	return a
}

// client is a minimal raw WebSocket client.
type client struct {
	nc   net.Conn
	br   *bufio.Reader
	resp *http.Response
	body string
}

// dialWS sends a handshake for target with extra header lines and reads the
// response; it does not fail on refusals.
func dialWS(t testing.TB, addr, target string, hdr ...string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, h := range hdr {
		req += h + "\r\n"
	}
	req += "\r\n"
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("handshake %s: %v", target, err)
	}
	c := &client{nc: nc, br: br, resp: resp}
	if resp.StatusCode != 101 {
		b, _ := io.ReadAll(resp.Body)
		c.body = string(b)
	}
	_ = nc.SetDeadline(time.Time{})
	return c
}

func mustDial(t testing.TB, addr, target string, hdr ...string) *client {
	t.Helper()
	c := dialWS(t, addr, target, hdr...)
	if c.resp.StatusCode != 101 {
		t.Fatalf("%s: status %d %q", target, c.resp.StatusCode, c.body)
	}
	return c
}

func (c *client) readFrame(t testing.TB, d time.Duration) (ws.Frame, error) {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	h, err := ws.ReadHeader(c.br)
	if err != nil {
		return ws.Frame{}, err
	}
	if h.Length > 1<<20 {
		return ws.Frame{}, fmt.Errorf("frame of %d bytes", h.Length)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return ws.Frame{}, err
	}
	return ws.Frame{Header: h, Payload: p}, nil
}

// nextData reads frames until a text frame, answering nothing.
func (c *client) expectText(t testing.TB, want string) {
	t.Helper()
	for {
		f, err := c.readFrame(t, 3*time.Second)
		if err != nil {
			t.Fatalf("want %q: %v", want, err)
		}
		if f.Header.OpCode == ws.OpPing {
			continue
		}
		if f.Header.OpCode != ws.OpText || string(f.Payload) != want {
			t.Fatalf("got op %v %q, want text %q", f.Header.OpCode, f.Payload, want)
		}
		return
	}
}

// expectClose reads until a close frame and checks its code.
func (c *client) expectClose(t testing.TB, code int) string {
	t.Helper()
	for {
		f, err := c.readFrame(t, 5*time.Second)
		if err != nil {
			t.Fatalf("want close %d: %v", code, err)
		}
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		got, reason := ws.ParseCloseFrameData(f.Payload)
		if int(got) != code {
			t.Fatalf("close code %d (%q), want %d", got, reason, code)
		}
		return reason
	}
}

func (c *client) send(t testing.TB, f ws.Frame) {
	t.Helper()
	if err := ws.WriteFrame(c.nc, ws.MaskFrame(f)); err != nil {
		t.Fatal(err)
	}
}

func textFrame(s string) []byte {
	f := ws.NewTextFrame([]byte(s))
	b, _ := ws.CompileFrame(f)
	return b
}

func checkRefused(t *testing.T, c *client, status int, reasonPart string) {
	t.Helper()
	if c.resp.StatusCode != status || !strings.Contains(c.body, reasonPart) {
		t.Fatalf("got %d %q, want %d containing %q", c.resp.StatusCode, c.body, status, reasonPart)
	}
	if strings.Count(strings.TrimSuffix(c.body, "\n"), "\n") != 0 {
		t.Fatalf("body is not one line: %q", c.body)
	}
}

// Conn must satisfy the core's bridge.Peer structurally (transport does not
// import bridge).
var _ interface {
	Wake()
	Close(code int, reason string)
} = (*Conn)(nil)
