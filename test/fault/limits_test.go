package fault

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// flood appends n events of size bytes for to, pipelined, and returns ids.
func flood(t testing.TB, rdb *redis.Client, to string, n, size int) []string {
	t.Helper()
	data := `"` + strings.Repeat("x", size-2) + `"`
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StringCmd, n)
	for i := range n {
		cmds[i] = pipe.XAdd(context.Background(), &redis.XAddArgs{Stream: "notifications", Values: []any{"to", to, "type", "flood", "data", data}})
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i, c := range cmds {
		ids[i] = c.Val()
	}
	return ids
}

// The floods exceed what the kernel buffers on one loopback connection
// (the sender's tcp_wmem maximum, 4 MiB by default, plus the small receive
// buffer), so the node's writes really stall.
const floodSize = 16 << 10

var floodEvents = func() int {
	wmem := 4 << 20
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 3 {
			if n, err := strconv.Atoi(f[2]); err == nil {
				wmem = n
			}
		}
	}
	return wmem*3/2/floodSize + 16
}()

// waitSlowCloses waits until the node has closed at least n connections as
// slow for cause (write_timeout, evicted, …).
func waitSlowCloses(t testing.TB, admin, cause string, n float64, timeout time.Duration) {
	t.Helper()
	if err := slowClosesWithin(admin, cause, n, timeout); err != nil {
		t.Fatal(err)
	}
}

// slowClosesWithin is waitSlowCloses for goroutines other than the test's
// (which must not call t.Fatal).
func slowClosesWithin(admin, cause string, n float64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		m, err := metrics(admin)
		got := m[`notifybridge_slow_client_closes_total{cause="`+cause+`"}`]
		if err == nil && got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("slow closes for %s: %v within %v, want %v (%v)", cause, got, timeout, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLimits(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()

	t.Run("max_connections", func(t *testing.T) {
		n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--max-connections", "5"}})
		for i := range 5 {
			e2e.Dial(t, n.Listen, "user=m"+strconv.Itoa(i), nil).WaitControl("caught_up", 5*time.Second)
		}
		status, body := e2e.Handshake(t, n.Listen, "user=m5", nil)
		if status != 503 {
			t.Fatalf("6th connection: %d %q, want 503", status, body)
		}
	})

	t.Run("replay_window 1013 then resume gets everything", func(t *testing.T) {
		n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--replay-window", "256KiB"}})
		slow := dialRaw(t, n.Listen, "user=slow", 4096)
		ids := flood(t, rdb, "user:slow", floodEvents, floodSize)
		// Stalled (for less than write_timeout) until the flood has
		// pushed what it still needs out of the 256 KiB window.
		// Stalled for less than write_timeout while the flood pushes what
		// it still needs out of the 256 KiB window. The node notices when
		// the socket drains again (it pulls from the window only when
		// writable), so the 1013 comes once the client reads; a client
		// stalled for good is cut off by write_timeout instead.
		time.Sleep(3 * time.Second)
		got, last, code, err := slow.readUntilClosed(30 * time.Second)
		if err != nil {
			t.Fatalf("slow client not closed: %v (got %d events)", err, len(got))
		}
		if code != 1013 {
			t.Fatalf("slow client closed with %d after %d events, want 1013", code, len(got))
		}
		if len(got) >= len(ids) || !prefixOf(got, ids) {
			t.Fatalf("before 1013: %d events, not a prefix of the %d appended", len(got), len(ids))
		}
		waitSlowCloses(t, n.Admin, "evicted", 1, 5*time.Second)
		c := e2e.Dial(t, n.Listen, "user=slow&last_event_id="+last, nil)
		c.WaitEvents(ids[len(got):], 30*time.Second)
		c.WaitControl("caught_up", 5*time.Second)
		t.Logf("1013 after %d of %d events; resume delivered the other %d", len(got), len(ids), len(ids)-len(got))
	})

	t.Run("write_timeout", func(t *testing.T) {
		n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--write-timeout", "1s"}})
		stuck := dialRaw(t, n.Listen, "user=stuck", 4096)
		ids := flood(t, rdb, "user:stuck", floodEvents, floodSize)
		// Reading starts only once write_timeout has cut the client off.
		waitSlowCloses(t, n.Admin, "write_timeout", 1, 15*time.Second)
		got, _, code, err := stuck.readUntilClosed(30 * time.Second)
		if err != nil {
			t.Fatalf("stuck client not closed: %v (got %d events)", err, len(got))
		}
		if len(got) >= len(ids) || (code != 1013 && code != 0) {
			t.Fatalf("stuck client: %d of %d events, close code %d; want cut off (1013 or no close frame)", len(got), len(ids), code)
		}
		t.Logf("cut off after %d of %d events, close code %d", len(got), len(ids), code)
	})

	t.Run("max_event_bytes", func(t *testing.T) {
		n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--max-event-bytes", "1024"}})
		c := e2e.Dial(t, n.Listen, "user=big", nil)
		c.WaitControl("caught_up", 5*time.Second)
		big := xadd(t, rdb, "user:big", `"`+strings.Repeat("b", 1100)+`"`)
		small := xadd(t, rdb, "user:big", `"ok"`)
		c.WaitEvents([]string{small}, 10*time.Second)
		e2e.WaitFor(t, 10*time.Second, "dead letter", func() error {
			dead, err := rdb.XRange(context.Background(), "notifications:dead", "-", "+").Result()
			if err != nil {
				return err
			}
			for _, d := range dead {
				if d.Values["id"] == big {
					t.Logf("dead-lettered: %v", d.Values["reason"])
					return nil
				}
			}
			return fmt.Errorf("%s not in notifications:dead", big)
		})
	})

	t.Run("handshake_timeout", func(t *testing.T) {
		n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--handshake-timeout", "1s"}})
		for _, partial := range []string{"", "GET /ws?user=h HTTP/1.1\r\nHost: x\r\n"} {
			c, err := net.DialTimeout("tcp", n.Listen, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, _ = c.Write([]byte(partial))
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 4096))
			el := time.Since(start)
			c.Close()
			if isTimeout(err) || el < 900*time.Millisecond || el > 4*time.Second {
				t.Fatalf("partial request %q: closed after %v (%v), want about 1s", partial, el, err)
			}
		}
	})
}

func xadd(t testing.TB, rdb *redis.Client, to, data string) string {
	t.Helper()
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "notifications", Values: []any{"to", to, "data", data}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func prefixOf(got, all []string) bool {
	for i := range got {
		if got[i] != all[i] {
			return false
		}
	}
	return true
}
