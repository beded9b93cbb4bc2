//go:build linux

package wspool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/notifybridge/notifybridge/bridge"
)

func TestRefusals(t *testing.T) {
	var ready atomic.Pointer[string]
	h := newHarness(t, func(cfg *Config) {
		cfg.Ready = func() error {
			if p := ready.Load(); p != nil {
				return errors.New(*p)
			}
			return nil
		}
		cfg.MaxGroups = 2
	})
	addr := h.addr()
	checkRefused(t, dialWS(t, addr, "/ws"), 401, "missing user")
	checkRefused(t, dialWS(t, addr, "/ws?user=a%20b"), 401, "whitespace")
	checkRefused(t, dialWS(t, addr, "/ws?user=a&groups=x,y,z"), 401, "3 groups")
	checkRefused(t, dialWS(t, addr, "/ws?user=a&groups=x,"), 401, "group is empty")
	checkRefused(t, dialWS(t, addr, "/ws?user=a&fail=id"), 400, "bad resume: id")
	// Default: same host only.
	checkRefused(t, dialWS(t, addr, "/ws?user=a", "Origin: http://evil.example"), 403, "origin")
	mustDial(t, addr, "/ws?user=o1", "Origin: http://"+addr)
	// Order: 403 before 401, 401 before 400.
	checkRefused(t, dialWS(t, addr, "/ws?fail=x", "Origin: http://evil.example"), 403, "origin")
	checkRefused(t, dialWS(t, addr, "/ws?fail=x"), 401, "missing user")
	// Not ready wins over everything.
	msg := "warming the window"
	ready.Store(&msg)
	c := dialWS(t, addr, "/ws", "Origin: http://evil.example")
	checkRefused(t, c, 503, "warming the window")
	if c.resp.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	ready.Store(nil)
	mustDial(t, addr, "/ws?user=ok")
	if h.hooks.refused.Load() < 8 {
		t.Fatalf("refusals counted: %d", h.hooks.refused.Load())
	}
}

func TestOriginRules(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.AllowedOrigins = []string{"https://app.example", "http://localhost:3000"} })
	addr := h.addr()
	mustDial(t, addr, "/ws?user=a", "Origin: https://app.example")
	mustDial(t, addr, "/ws?user=b", "Origin: HTTPS://APP.example:443")
	mustDial(t, addr, "/ws?user=c", "Origin: http://localhost:3000")
	mustDial(t, addr, "/ws?user=d") // no Origin: non-browser client
	checkRefused(t, dialWS(t, addr, "/ws?user=e", "Origin: http://app.example"), 403, "origin")
	checkRefused(t, dialWS(t, addr, "/ws?user=e", "Origin: http://"+addr), 403, "origin")
	checkRefused(t, dialWS(t, addr, "/ws?user=e", "Origin: null"), 403, "origin")

	h2 := newHarness(t, func(cfg *Config) { cfg.AllowedOrigins = []string{"*"} })
	mustDial(t, h2.addr(), "/ws?user=a", "Origin: http://anything.example")

	for _, tc := range []struct {
		origin, host string
		ok           bool
	}{
		{"http://example.com", "example.com", true},
		{"http://example.com", "example.com:80", true},
		{"https://example.com:443", "example.com", true},
		{"https://example.com", "example.com:8443", false},
		{"http://example.com:8080", "example.com:8080", true},
		{"http://Example.COM:8080", "example.com:8080", true},
		{"http://example.com.evil:8080", "example.com:8080", false},
		{"garbage", "example.com", false},
	} {
		if got := originAllowed(tc.origin, tc.host, nil); got != tc.ok {
			t.Errorf("originAllowed(%q, %q) = %v", tc.origin, tc.host, got)
		}
	}
}

func TestMaxConnections(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.MaxConnections = 2 })
	addr := h.addr()
	mustDial(t, addr, "/ws?user=a")
	c2 := mustDial(t, addr, "/ws?user=b")
	c := dialWS(t, addr, "/ws?user=c")
	checkRefused(t, c, 503, "max connections")
	if c.resp.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	c2.nc.Close()
	eventually(t, 2*time.Second, func() error {
		if n := h.s.Conns(); n != 1 {
			return fmt.Errorf("%d conns", n)
		}
		return nil
	})
	mustDial(t, addr, "/ws?user=c")
}

func TestMaxConnectionsPerIP(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.MaxConnectionsPerIP = 1 })
	mustDial(t, h.addr(), "/ws?user=a")
	checkRefused(t, dialWS(t, h.addr(), "/ws?user=b"), 503, "per ip")
}

func TestHTTPHandlerSamePort(t *testing.T) {
	h := newHarness(t, func(cfg *Config) {
		cfg.HTTPHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
		})
	})
	for _, tc := range []struct{ method, path, body, want string }{
		{"GET", "/demo", "", "GET /demo "},
		{"GET", "/wsx", "", "GET /wsx "},
		{"POST", "/ws", "hello", "POST /ws hello"},
	} {
		req, _ := http.NewRequest(tc.method, "http://"+h.addr()+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tc.want {
			t.Errorf("%s %s: %q", tc.method, tc.path, b)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	// And /ws still upgrades on the same port.
	mustDial(t, h.addr(), "/ws?user=a")
}

func TestHandshakeTimeoutAndHeaderLimit(t *testing.T) {
	h := newHarness(t, func(cfg *Config) {
		cfg.HandshakeTimeout = 200 * time.Millisecond
		cfg.MaxHeaderBytes = 1024
	})
	// Slowloris: half a request, then nothing.
	nc, err := net.Dial("tcp", h.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET /ws?user=a HTTP/1.1\r\nHost: x\r\n")
	start := time.Now()
	_ = nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("expected the server to close")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %v", d)
	}
	c := dialWS(t, h.addr(), "/ws?user=a", "X-Big: "+strings.Repeat("a", 2000))
	checkRefused(t, c, 431, "too large")
}

// A head larger than the small pooled buffer moves to a MaxHeaderBytes one
// and still upgrades, with the frame sent right behind it; one larger than
// MaxHeaderBytes gets 431.
func TestHandshakeLargeHead(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.MaxHeaderBytes = 8192 })
	nc, err := net.Dial("tcp", h.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /ws?user=big HTTP/1.1\r\nHost: " + h.addr() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Cookie: x=" + strings.Repeat("c", 5000) + "\r\n\r\n"
	var frame bytes.Buffer
	if err := ws.WriteFrame(&frame, ws.MaskFrame(ws.NewPingFrame([]byte("hi")))); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, req+frame.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	c := &client{nc: nc, br: br, resp: resp}
	f, err := c.readFrame(t, 3*time.Second)
	if err != nil || f.Header.OpCode != ws.OpPong || string(f.Payload) != "hi" {
		t.Fatalf("pong: %v %v %q", err, f.Header.OpCode, f.Payload)
	}
	if got := h.conn("big").req.Identity.User; got != "big" {
		t.Fatalf("user %q", got)
	}
	c = dialWS(t, h.addr(), "/ws?user=a", "X-Big: "+strings.Repeat("a", 9000))
	checkRefused(t, c, 431, "too large")
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.MaxConnections = -1 }, "max_connections: must be > 0"},
		{func(c *Config) { c.WriteTimeout = -1 }, "write_timeout: must be > 0"},
		{func(c *Config) { c.AllowedOrigins = []string{"app.example"} }, "allowed_origins"},
		{func(c *Config) { c.Auth = nil }, "auth"},
		{func(c *Config) { c.MaxConnectionsPerIP = -2 }, "max_connections_per_ip"},
	} {
		cfg := Config{Listen: "127.0.0.1:0", Auth: NewNoneAuthenticator(), ValidateName: bridge.ValidateName,
			Accept: func(*Request) (Source, error) { return nil, nil }}
		tc.mod(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}
