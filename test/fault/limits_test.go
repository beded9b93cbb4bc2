package fault

import (
	"context"
	"fmt"
	"net"
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

// floodBytes exceeds what the kernel buffers on a loopback connection
// (tcp_wmem's 4 MiB maximum on the sender plus the small receive buffer) so
// the node's writes really stall.
const floodEvents, floodSize = 400, 16 << 10

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
		// Stalled (but for less than write_timeout) while the flood
		// pushes what it still needs out of the 256 KiB window.
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
		c := e2e.Dial(t, n.Listen, "user=slow&last_event_id="+last, nil)
		c.WaitEvents(ids[len(got):], 30*time.Second)
		c.WaitControl("caught_up", 5*time.Second)
		t.Logf("1013 after %d of %d events; resume delivered the other %d", len(got), len(ids), len(ids)-len(got))
	})

	t.Run("write_timeout", func(t *testing.T) {
		n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--write-timeout", "1s"}})
		stuck := dialRaw(t, n.Listen, "user=stuck", 4096)
		ids := flood(t, rdb, "user:stuck", floodEvents, floodSize)
		// Reading starts only after write_timeout has passed with the
		// node's writes stalled.
		time.Sleep(3 * time.Second)
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
