package fault

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestRedisOutage: Redis is killed under load and started again from its
// AOF. The node turns not-ready, keeps its WebSocket connections, reconnects
// with backoff and then delivers everything appended after the restart;
// sessions that resume get everything too. Afterwards the node's goroutines
// are back to their baseline and its heap within a bound.
func TestRedisOutage(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{AppendOnly: true, FsyncAlways: true})
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "outage",
		Args: []string{"--redis-retry-backoff", "1s", "--ingest-block", "500ms"}})
	names := users("u", pick(20, 100))
	stay := sessions(t, n.Listen, names[:len(names)/2])   // keep their connection throughout
	resume := sessions(t, n.Listen, names[len(names)/2:]) // reconnect after the outage
	p := startProducer(t, rdb, "notifications", names, 500, 0)
	time.Sleep(time.Second)
	baseG := metric(t, n.Admin, "go_goroutines")
	baseHeap := metric(t, n.Admin, "go_memstats_heap_inuse_bytes")

	outage := pick(5*time.Second, 30*time.Second)
	rs.Stop()
	e2e.WaitFor(t, 10*time.Second, "readyz 503 while redis is down", func() error {
		if s := readyStatus(n.Admin); s != 503 {
			return fmt.Errorf("readyz %d", s)
		}
		return nil
	})
	for _, r := range resume {
		r.conns[len(r.conns)-1].Close()
	}
	// A new connection meanwhile is refused like any while not ready (503),
	// resume or not: the client retries with backoff.
	if status, body := e2e.Handshake(t, n.Listen, "user="+resume[0].user+"&last_event_id="+resume[0].last(), nil); status != 503 {
		t.Errorf("connect during the outage: %d %q, want 503", status, body)
	}
	time.Sleep(outage)
	for _, r := range stay {
		select {
		case <-r.conns[0].Done():
			t.Fatalf("%s: connection dropped during the outage (code %d)", r.user, r.conns[0].Code())
		default:
		}
	}
	rs.Start()
	down := time.Now()
	n.WaitReady(30 * time.Second)
	t.Logf("outage %v: ready again %v after redis came back; producer %d appended, %d failed", outage, time.Since(down).Round(time.Millisecond), p.ok.Load(), p.failed.Load())
	for _, r := range resume {
		r.mustConnect(n.Listen, 10*time.Second)
	}
	time.Sleep(2 * time.Second)
	p.Stop()
	for _, r := range stay {
		if len(r.conns) != 1 {
			t.Fatalf("%s reconnected", r.user)
		}
	}
	checkAll(t, rdb, "notifications", append(stay, resume...), true, 30*time.Second)

	// Backoff, not a hot loop: with redis_retry_backoff 1s, a handful of
	// retries per second of outage at most (a busy loop logs thousands).
	retries := strings.Count(n.Out.String(), "retrying")
	if max := 4*int(outage/time.Second) + 20; retries > max {
		t.Errorf("%d retry log lines during a %v outage, want at most %d", retries, outage, max)
	}
	g := waitGoroutinesBack(t, n.Admin, baseG, 10, 20*time.Second)
	heap := metric(t, n.Admin, "go_memstats_heap_inuse_bytes")
	t.Logf("%d retries logged; goroutines %v → %v; heap in use %.1f MiB → %.1f MiB", retries, baseG, g, baseHeap/(1<<20), heap/(1<<20))
	// The replay window grows with the events appended meanwhile (up to
	// replay_window); anything beyond that plus slack is a leak.
	if heap > baseHeap+64<<20 {
		t.Errorf("heap in use grew from %.1f MiB to %.1f MiB", baseHeap/(1<<20), heap/(1<<20))
	}
}

// TestNodeStartsBeforeRedis: a node whose Redis is down at start is alive
// (/healthz 200) but not ready, retries with backoff, and becomes ready and
// delivers once Redis appears, without a restart.
func TestNodeStartsBeforeRedis(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{AppendOnly: true})
	rdb := rs.Client()
	rs.Stop()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NoWait: true, Args: []string{"--redis-retry-backoff", "500ms"}})
	e2e.WaitFor(t, 10*time.Second, "alive but not ready", func() error {
		resp, err := http.Get("http://" + n.Admin + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || readyStatus(n.Admin) != 503 {
			return fmt.Errorf("healthz %d readyz %d", resp.StatusCode, readyStatus(n.Admin))
		}
		return nil
	})
	time.Sleep(2 * time.Second) // a few failed attempts
	rs.Start()
	n.WaitReady(20 * time.Second)
	rs2 := sessions(t, n.Listen, users("u", 5))
	p := startProducer(t, rdb, "notifications", users("u", 5), 200, 0)
	time.Sleep(time.Second)
	p.Stop()
	checkAll(t, rdb, "notifications", rs2, true, 20*time.Second)
}
