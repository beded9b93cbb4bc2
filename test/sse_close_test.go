package test

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

func tokenExp(t *testing.T, secret, sub string, exp time.Time) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": exp.Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStreamTokenExpiry: an SSE stream ends with a close event 1008 when
// its token expires; a waiting poll is answered then.
func TestStreamTokenExpiry(t *testing.T) {
	rs := redistest.Start(t)
	const secret = "stream-test-secret"
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--auth", "jwt", "--jwt-secret", secret, "--jwt-leeway", "0s"}})
	tok := tokenExp(t, secret, "u1", time.Now().Add(2*time.Second))
	c := dialSSE(t, n.Listen, "", "Authorization", "Bearer "+tok)
	if c.status != 200 {
		t.Fatalf("status %d %s", c.status, c.body)
	}
	c.waitControl("caught_up")
	c.waitClosed()
	ms := c.messages()
	if last := ms[len(ms)-1]; last.event != "close" || !strings.Contains(last.data, `"code":1008`) {
		t.Fatalf("last event %+v, want close 1008", last)
	}
	// A cookie works as on /ws.
	tok = tokenExp(t, secret, "u1", time.Now().Add(2*time.Second))
	// The first poll (no position) is answered at once; the one resuming
	// from its last waits, and is answered when the token expires.
	first := doPoll(t, n.Listen, "", "Cookie", "notifybridge_token="+tok)
	if first.status != 200 || first.Last == "" {
		t.Fatalf("first poll: %d %q", first.status, first.body)
	}
	start := time.Now()
	p := doPoll(t, n.Listen, "last_event_id="+first.Last, "Cookie", "notifybridge_token="+tok)
	if p.status != 200 || len(p.events()) != 0 || p.Last != first.Last || time.Since(start) > 10*time.Second {
		t.Fatalf("poll at expiry: %d %q after %v", p.status, p.body, time.Since(start))
	}
}

// TestSSESlowReaderClosed: a client that stops reading is closed after
// write_timeout, without holding the node.
func TestSSESlowReaderClosed(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--write-timeout", "1s"}})
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	nc, err := d.Dial("tcp", n.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte("GET /events?user=slow HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	big := `"` + strings.Repeat("x", 60000) + `"`
	for i := 0; i < 200; i++ {
		xadd(t, rdb, "notifications", "to", "user:slow", "data", big)
	}
	e2e.WaitFor(t, 20*time.Second, "slow SSE reader closed", func() error {
		if value(scrape(t, n.Admin), "notifybridge_slow_client_closes_total", "cause", "write_timeout") < 1 {
			return errors.New("no write_timeout close yet")
		}
		return nil
	})
	// Reading on ends at the close, not after 200 events.
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64<<10)
	total := 0
	for {
		k, err := nc.Read(buf)
		total += k
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("stream still open after %d bytes", total)
			}
			break
		}
	}
	if total >= 200*60000 {
		t.Fatalf("read %d bytes: not closed", total)
	}
}

// TestStreamBadRequestAndNotReady: a malformed resume id is 400, a node
// that is not ready answers 503 with Retry-After, on both paths.
func TestStreamBadRequestAndNotReady(t *testing.T) {
	rs := redistest.Start(t)
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})
	for _, path := range []string{"/events", "/poll"} {
		c := dialStream(t, n.Listen, path, "user=a&last_event_id=nope")
		if c.status != 400 || !strings.Contains(c.body, "last_event_id") {
			t.Errorf("%s bad id: %d %q", path, c.status, c.body)
		}
		c = dialStream(t, n.Listen, path, "user=a", "Last-Event-ID", "99999999999999-0")
		if c.status != 400 || !strings.Contains(c.body, "future") {
			t.Errorf("%s future id: %d %q", path, c.status, c.body)
		}
	}
	down := e2e.StartNode(t, e2e.NodeOptions{RedisURL: "redis://127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)), NoWait: true})
	for _, path := range []string{"/events", "/poll"} {
		var c *sseClient
		e2e.WaitFor(t, 20*time.Second, "listening", func() error {
			nc, err := net.Dial("tcp", down.Listen)
			if err == nil {
				nc.Close()
			}
			return err
		})
		c = dialStream(t, down.Listen, path, "user=a")
		if c.status != 503 || c.header.Get("Retry-After") == "" {
			t.Errorf("%s not ready: %d %q %v", path, c.status, c.body, c.header)
		}
	}
}
