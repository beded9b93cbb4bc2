package fault

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

const secret = "fault-suite-secret"

// probe measures what a user feels: handshake until caught_up, then one
// event appended and received. It returns the total.
func probe(t testing.TB, addr string, rdb *redis.Client, i int) (time.Duration, error) {
	user := "probe" + strconv.Itoa(i)
	start := time.Now()
	c, err := e2e.TryDial(t, addr, "token="+token(t, secret, user, time.Hour), nil)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := waitFrame(c, func(f e2e.Frame) bool { return f.Control == "caught_up" }, 10*time.Second); err != nil {
		return 0, err
	}
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "notifications", Values: []any{"to", "user:" + user, "data", "1"}}).Result()
	if err != nil {
		return 0, err
	}
	if err := waitFrame(c, func(f e2e.Frame) bool { return f.ID == id }, 10*time.Second); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func waitFrame(c *e2e.Client, match func(e2e.Frame) bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, f := range c.Snapshot() {
			if match(f) {
				return nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("no matching frame within %v: %s", timeout, c.Describe())
}

func probes(t testing.TB, addr string, rdb *redis.Client, n int) []time.Duration {
	t.Helper()
	var d []time.Duration
	for i := range n {
		lat, err := probe(t, addr, rdb, i)
		if err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
		d = append(d, lat)
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

// TestHostileInput runs every attack at once against one node while a probe
// client keeps measuring handshake-to-first-event latency: slowloris
// handshakes, oversized headers, oversized client frames, connections opened
// and dropped in a loop, clients that never read, and tokens expiring en
// masse. The node stays responsive, every attacker is dealt with as the
// contract says, and goroutines and heap return near their baseline.
func TestHostileInput(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "hostile",
		Args: []string{"--jwt-secret", secret, "--handshake-timeout", "2s", "--write-timeout", "2s"}})
	idle := probes(t, n.Listen, rdb, pick(20, 100))
	baseG := metric(t, n.Admin, "go_goroutines")
	baseHeap := metric(t, n.Admin, "go_memstats_heap_inuse_bytes")

	var wg sync.WaitGroup
	var stats struct {
		slowlorisCut, bigHeaderRefused, bigFrame1009, churn, neverRead, expired1008 atomic.Int64
	}
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	slowloris, bigHeaders, bigFrames := pick(200, 1000), pick(50, 500), pick(50, 500)
	// Never-read clients cost up to 4 MiB of kernel buffer each: few of them.
	churn, neverRead, expiring := pick(1500, 10000), pick(10, 50), pick(200, 2000)
	run("slowloris", func() error {
		var inner sync.WaitGroup
		errs := make(chan error, slowloris)
		for i := range slowloris {
			inner.Add(1)
			go func() {
				defer inner.Done()
				c, err := net.DialTimeout("tcp", n.Listen, 5*time.Second)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				start := time.Now()
				_, _ = fmt.Fprintf(c, "GET /ws?token=%s HTTP/1.1\r\nHost: x\r\n", token(t, secret, "sl"+strconv.Itoa(i), time.Hour))
				// One header byte every 300ms: never a whole request.
				for time.Since(start) < 8*time.Second {
					if _, err := c.Write([]byte("X")); err != nil {
						break
					}
					_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
					if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
						break
					}
				}
				if el := time.Since(start); el > 5*time.Second {
					errs <- fmt.Errorf("slowloris connection open %v with handshake_timeout 2s", el)
					return
				}
				stats.slowlorisCut.Add(1)
			}()
		}
		inner.Wait()
		close(errs)
		return <-errs
	})
	run("oversized headers", func() error {
		for range bigHeaders {
			status, err := rawRequest(n.Listen, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Big: "+strings.Repeat("a", 256<<10)+"\r\n\r\n")
			if err != nil {
				return err
			}
			if status == 101 {
				return fmt.Errorf("a 256 KiB header was upgraded")
			}
			stats.bigHeaderRefused.Add(1)
		}
		return nil
	})
	run("oversized frames", func() error {
		for i := range bigFrames {
			c, err := e2e.TryDial(t, n.Listen, "token="+token(t, secret, "big"+strconv.Itoa(i), time.Hour), nil)
			if err != nil {
				return err
			}
			if err := waitFrame(c, func(f e2e.Frame) bool { return f.Control == "caught_up" }, 10*time.Second); err != nil {
				return err
			}
			if err := wsutil.WriteClientText(c.Conn(), make([]byte, 64<<10)); err != nil {
				return err
			}
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				return fmt.Errorf("not closed after a 64 KiB frame")
			}
			if code := c.Code(); code != ws.StatusMessageTooBig {
				return fmt.Errorf("close code %d after a 64 KiB frame, want 1009", code)
			}
			stats.bigFrame1009.Add(1)
		}
		return nil
	})
	run("open and drop", func() error {
		tok := token(t, secret, "churn", time.Hour)
		for i := range churn {
			if i%2 == 0 {
				// A whole handshake, then gone without a close frame.
				d := ws.Dialer{Timeout: 5 * time.Second}
				conn, _, _, err := d.Dial(context.Background(), "ws://"+n.Listen+"/ws?token="+tok)
				if err != nil {
					return err
				}
				_ = conn.Close()
			} else {
				// Gone halfway through the request.
				conn, err := net.DialTimeout("tcp", n.Listen, 5*time.Second)
				if err != nil {
					return err
				}
				_, _ = io.WriteString(conn, "GET /ws?token="+tok+" HTTP/1.1\r\nHost:")
				_ = conn.Close()
			}
			stats.churn.Add(1)
		}
		return nil
	})
	run("never read", func() error {
		var conns []*rawConn
		for i := range neverRead {
			conns = append(conns, dialRaw(t, n.Listen, "token="+token(t, secret, "nr"+strconv.Itoa(i), time.Hour, "flood"), 4096))
		}
		// Broadcast to their group more than the kernel buffers (see
		// floodEvents), so each is cut off by write_timeout (2s).
		flood(t, rdb, "group:flood", floodEvents, floodSize)
		if err := slowClosesWithin(n.Admin, "write_timeout", float64(neverRead), 20*time.Second); err != nil {
			return err
		}
		for _, c := range conns {
			ids, _, _, err := c.readUntilClosed(20 * time.Second)
			if err != nil {
				return fmt.Errorf("never-read client still open: %v", err)
			}
			if len(ids) >= floodEvents {
				return fmt.Errorf("never-read client got all %d events", len(ids))
			}
			stats.neverRead.Add(1)
		}
		return nil
	})
	run("expiring tokens", func() error {
		var cs []*e2e.Client
		for i := range expiring {
			c, err := e2e.TryDial(t, n.Listen, "token="+token(t, secret, "exp"+strconv.Itoa(i), 2*time.Second), nil)
			if err != nil {
				return err
			}
			cs = append(cs, c)
		}
		for _, c := range cs {
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				return fmt.Errorf("expired connection still open")
			}
			if code := c.Code(); code != ws.StatusPolicyViolation {
				return fmt.Errorf("close code %d for an expired token, want 1008", code)
			}
			stats.expired1008.Add(1)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // let the attacks ramp up
	attacked := probes(t, n.Listen, rdb, pick(20, 100))
	wg.Wait()

	t.Logf("attacks: %d slowloris cut, %d oversized headers refused, %d oversized frames closed 1009, %d open/drop, %d never-read clients cut off, %d expired tokens closed 1008",
		stats.slowlorisCut.Load(), stats.bigHeaderRefused.Load(), stats.bigFrame1009.Load(), stats.churn.Load(), stats.neverRead.Load(), stats.expired1008.Load())
	for _, s := range []struct {
		name string
		d    []time.Duration
	}{{"idle", idle}, {"under attack", attacked}} {
		t.Logf("probe handshake+first event %s (%d probes): p50 %v p95 %v p99 %v max %v", s.name, len(s.d),
			percentile(s.d, 50).Round(10*time.Microsecond), percentile(s.d, 95).Round(10*time.Microsecond),
			percentile(s.d, 99).Round(10*time.Microsecond), percentile(s.d, 100).Round(10*time.Microsecond))
	}
	if p := percentile(attacked, 99); p > 2*time.Second {
		t.Errorf("probe p99 under attack %v: not responsive", p)
	}
	e2e.WaitFor(t, 20*time.Second, "attack connections gone", func() error {
		if c := metric(t, n.Admin, "notifybridge_connections"); c != 0 {
			return fmt.Errorf("%v connections open", c)
		}
		return nil
	})
	g := waitGoroutinesBack(t, n.Admin, baseG, 10, 20*time.Second)
	var heap float64
	e2e.WaitFor(t, 20*time.Second, "heap near baseline", func() error {
		heap = metric(t, n.Admin, "go_memstats_heap_inuse_bytes")
		// The window keeps the flood's events; beyond that, 32 MiB of
		// slack for the allocator and the race detector.
		if heap > baseHeap+float64(floodEvents*floodSize+32<<20) {
			return fmt.Errorf("heap in use %.1f MiB, baseline %.1f MiB", heap/(1<<20), baseHeap/(1<<20))
		}
		return nil
	})
	t.Logf("goroutines %v → %v; heap in use %.1f MiB → %.1f MiB", baseG, g, baseHeap/(1<<20), heap/(1<<20))
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// rawRequest writes a raw HTTP request and returns the response status (0
// when the server closed without one, which also counts as a refusal).
func rawRequest(addr, req string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = io.WriteString(c, req) }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, nil
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestMaxConnectionsPerIP: the fourth connection from one address is refused
// with 503 and Retry-After; another loopback address is not affected; a
// freed slot is usable again.
func TestMaxConnectionsPerIP(t *testing.T) {
	rs := redistest.Start(t)
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--max-connections-per-ip", "3"}})
	var cs []*e2e.Client
	for i := range 3 {
		c := e2e.Dial(t, n.Listen, "user=u"+strconv.Itoa(i), nil)
		c.WaitControl("caught_up", 5*time.Second)
		cs = append(cs, c)
	}
	status, hdr := handshakeFrom(t, "127.0.0.1", n.Listen)
	if status != 503 || hdr.Get("Retry-After") == "" {
		t.Fatalf("4th connection from 127.0.0.1: %d Retry-After=%q, want 503 with Retry-After", status, hdr.Get("Retry-After"))
	}
	if status, _ := handshakeFrom(t, "127.0.0.2", n.Listen); status != 101 {
		t.Fatalf("first connection from 127.0.0.2: %d, want 101", status)
	}
	cs[0].Close()
	e2e.WaitFor(t, 5*time.Second, "slot freed", func() error {
		if status, _ := handshakeFrom(t, "127.0.0.1", n.Listen); status != 101 {
			return fmt.Errorf("status %d", status)
		}
		return nil
	})
}

// handshakeFrom upgrades from a given local address and returns the status
// and headers; a successful upgrade is closed at once.
func handshakeFrom(t testing.TB, local, addr string) (int, http.Header) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET /ws?user=x HTTP/1.1\r\nHost: "+addr+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}
