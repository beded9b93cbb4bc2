package fault

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/faultproxy"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestSilentPartition: the path between the node and Redis goes silent (no
// RST, no FIN; both sockets stay open) right after a burst, so the blocked
// XREADGROUP and the batched XACKs of the burst are cut mid-flight. The
// node turns not-ready within a bound, stays alive, keeps its WebSocket
// connections, is ready again within a bound after the heal, and nothing is
// lost, doubled on a connection or left pending.
//
// The short form partitions once for 10 s: longer than the client's read
// timeout on the blocked read (ingest_block + 5 s = 7 s), so the timeout
// path runs, not only the delayed reply. The long form does it 4 times for
// 30 s.
func TestSilentPartition(t *testing.T) { partition(t, false) }

// TestSilentPartitionStateLost is TestSilentPartition where the path comes
// back without the connections that were open across it (a NAT or firewall
// lost their state and drops their packets, no RST): only the node's own
// timeouts can end them, and it must be ready and delivering again within
// a bound after the heal all the same.
func TestSilentPartitionStateLost(t *testing.T) { partition(t, true) }

func partition(t *testing.T, forget bool) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	px, n := proxiedNode(t, rs, "partition")
	names := users("p", 20)
	groups := []string{"ops", "noc", "field", "empty-but-watched"}
	sess := groupSessions(t, n.Listen, names, groups)
	p := startMixedProducer(t, rdb, "notifications", names, groups, 200)
	time.Sleep(500 * time.Millisecond)

	cycles, cut := pick(1, 4), pick(10*time.Second, 30*time.Second)
	var toNotReady, toReady, toDelivery []time.Duration
	maxPendingAtCut := int64(0)
	for cycle := range cycles {
		// A burst, then the cut while the node is still reading and acking it.
		burst(t, rdb, "notifications", 2000, cycle)
		px.Partition()
		cutAt := time.Now()
		// Nothing from the node reaches Redis now: what its group holds
		// pending is what it read and had not acked yet.
		time.Sleep(200 * time.Millisecond)
		pendingAtCut := pendingCount(t, rdb)
		maxPendingAtCut = max(maxPendingAtCut, pendingAtCut)

		e2e.WaitFor(t, 10*time.Second, "readyz 503 during the partition", func() error {
			if s := readyStatus(n.Admin); s != 503 {
				return fmt.Errorf("readyz %d", s)
			}
			return nil
		})
		toNotReady = append(toNotReady, time.Since(cutAt))
		for time.Since(cutAt) < cut {
			if s := healthStatus(n.Admin); s != 200 {
				t.Fatalf("healthz %d during the partition", s)
			}
			if s := readyStatus(n.Admin); s != 503 {
				t.Fatalf("readyz %d %v into the partition, want 503 throughout", s, time.Since(cutAt).Round(time.Millisecond))
			}
			connsKept(t, sess, "during the partition")
			time.Sleep(250 * time.Millisecond)
		}
		if forget {
			px.HealForgetting()
		} else {
			px.Heal()
		}
		healAt := time.Now()
		n.WaitReady(30 * time.Second)
		toReady = append(toReady, time.Since(healAt))
		// Delivery resumed: an event appended now reaches its session.
		probe := sess[cycle%len(sess)]
		id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "notifications",
			Values: []any{"to", "user:" + probe.user, "type", "probe", "data", strconv.Itoa(cycle)}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		e2e.WaitFor(t, 30*time.Second, "an event appended after the heal arrives", func() error {
			for _, got := range probe.conns[len(probe.conns)-1].Events() {
				if got == id {
					return nil
				}
			}
			return fmt.Errorf("%s has not got %s", probe.user, id)
		})
		toDelivery = append(toDelivery, time.Since(healAt))
		// Ready means ready: no relapse to 503 once ready after the heal (a
		// connection left dead in the client's pool makes a later probe time
		// out; checked for longer than the read timeout, 7 s).
		for end := healAt.Add(10 * time.Second); time.Now().Before(end); {
			if s := readyStatus(n.Admin); s == 503 {
				t.Fatalf("cycle %d: readyz 503 again %v after the heal", cycle, time.Since(healAt).Round(time.Millisecond))
			}
			time.Sleep(100 * time.Millisecond)
		}
		connsKept(t, sess, "after the heal")
		t.Logf("cycle %d: %d pending at the cut; not ready %v after the cut; ready %v and delivering %v after the heal",
			cycle, pendingAtCut, toNotReady[cycle].Round(time.Millisecond), toReady[cycle].Round(time.Millisecond), toDelivery[cycle].Round(time.Millisecond))
	}
	finalBroadcast(t, rdb, "notifications")
	p.Stop()
	checkAll(t, rdb, "notifications", sess, true, 30*time.Second)
	e2e.WaitFor(t, 20*time.Second, "nothing left pending", func() error {
		if c := pendingCount(t, rdb); c != 0 {
			return fmt.Errorf("%d entries pending in the group", c)
		}
		return nil
	})
	if maxPendingAtCut == 0 {
		t.Logf("no ack was in flight at any cut (the node had acked the whole burst); only the blocked read was cut")
	}
	m, _ := metrics(n.Admin)
	if f := os.Getenv("NB_FAULT_LOG"); f != "" {
		_ = os.WriteFile(f, []byte(n.Out.String()), 0o644) // the node's log, for studying a run
	}
	t.Logf("%d cycles of %v: producer %d appended; redis errors xreadgroup %v xack %v; not ready after max %v, ready again after max %v, delivering after max %v",
		cycles, cut, p.ok.Load(), m[`notifybridge_redis_errors_total{op="xreadgroup"}`], m[`notifybridge_redis_errors_total{op="xack"}`],
		maxDur(toNotReady).Round(time.Millisecond), maxDur(toReady).Round(time.Millisecond), maxDur(toDelivery).Round(time.Millisecond))
}

// burst appends n events at once (one pipeline), for users p0..p19 in turn.
func burst(t testing.TB, rdb redis.UniversalClient, stream string, n, tag int) {
	t.Helper()
	pipe := rdb.Pipeline()
	for i := range n {
		pipe.XAdd(context.Background(), &redis.XAddArgs{Stream: stream,
			Values: []any{"to", "user:p" + strconv.Itoa(i%20), "type", "burst", "data", strconv.Itoa(tag*n + i)}})
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatalf("burst: %v", err)
	}
}

// pendingCount is the size of every consumer group's pending list on the
// stream (the tests run one node per stream).
func pendingCount(t testing.TB, rdb redis.UniversalClient) int64 {
	t.Helper()
	groups, err := rdb.XInfoGroups(context.Background(), "notifications").Result()
	if err != nil {
		t.Fatalf("XINFO GROUPS: %v", err)
	}
	var n int64
	for _, g := range groups {
		n += g.Pending
	}
	return n
}

func healthStatus(admin string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + admin + "/healthz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// proxiedNode starts a node that reaches rs through a faultproxy the test
// can cut; both stop with the test.
func proxiedNode(t *testing.T, rs *redistest.Server, nodeID string) (*faultproxy.Proxy, *e2e.Node) {
	t.Helper()
	px, err := faultproxy.Start(rs.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: "redis://" + px.Addr(), NodeID: nodeID,
		Args: []string{"--redis-retry-backoff", "1s"}})
	return px, n
}
