package fault

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestRedisOutOfMemory: Redis reaches maxmemory with noeviction. Producers'
// XADDs are refused (OOM); the node keeps its connections and keeps
// serving what it has (new connections and resumes included); a bad entry
// it reads meanwhile cannot be dead-lettered (XADD to <stream>:dead is
// refused too), so it stays pending, neither acked nor skipped, and is
// dead-lettered once memory is freed. A node started during the OOM cannot
// create its group (XGROUP CREATE is refused too) and catches up once it
// can. XREADGROUP, XACK and XTRIM are not refused under OOM (Redis does not
// flag them denyoom), so reading and acknowledging go on.
func TestRedisOutOfMemory(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	// The bad entry must reach the stream while Redis refuses writes, which
	// no client can do; so the node is cut off (faultproxy) while it is
	// appended and memory is then filled, and reads it once healed.
	px, n := proxiedNode(t, rs, "oom")
	names := users("m", 20)
	groups := []string{"ops", "noc", "field"}
	sess := groupSessions(t, n.Listen, names, groups)
	p := startMixedProducer(t, rdb, "notifications", names, groups, 200)
	time.Sleep(time.Second)

	// Fill memory: a little headroom above what Redis uses now, which the
	// producer eats up until its appends are refused.
	used := usedMemory(t, rdb)
	mustDo(t, rdb, "CONFIG", "SET", "maxmemory-policy", "noeviction")
	mustDo(t, rdb, "CONFIG", "SET", "maxmemory", strconv.FormatInt(used+64<<10, 10))
	before := p.failed.Load()
	e2e.WaitFor(t, 60*time.Second, "appends refused (OOM)", func() error {
		err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "notifications", Values: []any{"to", "user:nobody-oom", "data", "1"}}).Err()
		if err == nil || !strings.HasPrefix(err.Error(), "OOM") {
			return fmt.Errorf("XADD: %v (producer %d ok); used %d", err, p.ok.Load(), usedMemory(t, rdb))
		}
		return nil
	})
	// Acks and trims free a little memory again; keep Redis over the limit
	// from here on.
	mustDo(t, rdb, "CONFIG", "SET", "maxmemory", "1")
	e2e.WaitFor(t, 10*time.Second, "the producer's appends refused", func() error {
		if p.failed.Load() == before {
			return fmt.Errorf("no refused append yet")
		}
		return nil
	})
	readyAtOOM := readyStatus(n.Admin)
	connsKept(t, sess, "at maxmemory")

	// The bad entry, then a good one behind it, while the node is cut off.
	px.Partition()
	mustDo(t, rdb, "CONFIG", "SET", "maxmemory", "0")
	badID := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "notifications", Values: []any{"to", "user:m0", "data", "{not json"}}).Val()
	behind := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "notifications", Values: []any{"to", "user:m1", "type", "behind", "data", "1"}}).Val()
	mustDo(t, rdb, "CONFIG", "SET", "maxmemory", "1") // everything is over it now
	px.Heal()
	n.WaitReady(20 * time.Second)
	e2e.WaitFor(t, 20*time.Second, "the dead letter refused at least twice", func() error {
		m, err := metrics(n.Admin)
		if err != nil {
			return err
		}
		if v := m[`notifybridge_redis_errors_total{op="dead_letter"}`]; v < 2 {
			return fmt.Errorf("dead_letter errors %v", v)
		}
		return nil
	})
	// The reason is in the log, next to the counted refusal.
	if !strings.Contains(n.Out.String(), "OOM command not allowed") {
		t.Errorf("the node's log does not say why the dead letter failed")
	}
	if !isPending(t, rdb, badID) {
		t.Fatalf("bad entry %s is not pending while its dead letter is refused (acked and lost?)", badID)
	}
	// XACK is not refused under OOM: everything read before is acked; only
	// the bad entry and what the reader fetched behind it are pending.
	e2e.WaitFor(t, 10*time.Second, "every other entry acked at maxmemory", func() error {
		if c := pendingCount(t, rdb); c > 2 {
			return fmt.Errorf("%d entries pending", c)
		}
		return nil
	})
	if l := rdb.XLen(ctx, "notifications:dead").Val(); l != 0 {
		t.Fatalf("%d dead letters written while at maxmemory", l)
	}
	// The node still serves: a new session resumes from the stream's start
	// and gets what the window holds; the existing ones are kept.
	late := newResumer(t, "mlate")
	late.groups = []string{"ops"}
	late.query = "&last_event_id=0-0"
	late.mustConnect(n.Listen, 10*time.Second)
	late.conns[0].WaitControl("caught_up", 20*time.Second)
	connsKept(t, sess, "at maxmemory with a bad entry pending")
	// A node started now cannot create its consumer group.
	n2 := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "oom-late", NoWait: true,
		Args: []string{"--redis-retry-backoff", "1s"}})
	e2e.WaitFor(t, 30*time.Second, "the late node tried to create its group", func() error {
		if !strings.Contains(n2.Out.String(), "creating the consumer group failed") {
			return fmt.Errorf("no such log line yet")
		}
		return nil
	})
	n2Ready := readyStatus(n2.Admin)
	readyDuring := readyStatus(n.Admin)

	// Memory freed: the bad entry is dead-lettered with its reason and acked,
	// the one behind it delivered, the producer appends again.
	freed := time.Now()
	mustDo(t, rdb, "CONFIG", "SET", "maxmemory", "0")
	e2e.WaitFor(t, 30*time.Second, "the bad entry dead-lettered after memory was freed", func() error {
		dead, err := rdb.XRange(ctx, "notifications:dead", "-", "+").Result()
		if err != nil {
			return err
		}
		for _, d := range dead {
			if d.Values["id"] == badID {
				return nil
			}
		}
		return fmt.Errorf("%d dead letters, none for %s", len(dead), badID)
	})
	deadAfter := time.Since(freed)
	e2e.WaitFor(t, 20*time.Second, "the entry behind it delivered", func() error {
		for _, id := range sess[1].conns[len(sess[1].conns)-1].Events() {
			if id == behind {
				return nil
			}
		}
		return fmt.Errorf("m1 has not got %s", behind)
	})
	n2.WaitReady(30 * time.Second)
	sess2 := groupSessions(t, n2.Listen, users("late", 3), groups)
	okBefore := p.ok.Load()
	e2e.WaitFor(t, 20*time.Second, "the producer appends again", func() error {
		if p.ok.Load() <= okBefore+50 {
			return fmt.Errorf("%d appended since memory was freed", p.ok.Load()-okBefore)
		}
		return nil
	})
	finalBroadcast(t, rdb, "notifications")
	p.Stop()
	checkAll(t, rdb, "notifications", append(sess, late), true, 30*time.Second)
	// The late node's group starts at what it warmed: its sessions get
	// exactly what the stream has for them after their caught_up.
	want2 := expected(t, rdb, "notifications", sess2)
	for _, r := range sess2 {
		from := r.conns[0].WaitControl("caught_up", 10*time.Second).Last
		var ids []string
		for _, id := range want2[r.user] {
			if idLess(from, id) {
				ids = append(ids, id)
			}
		}
		e2e.WaitFor(t, 20*time.Second, "the late node delivers", func() error { return r.check(ids, true) })
	}
	e2e.WaitFor(t, 20*time.Second, "nothing left pending", func() error {
		if c := pendingCount(t, rdb); c != 0 {
			return fmt.Errorf("%d entries pending", c)
		}
		return nil
	})
	t.Logf("at maxmemory: producer refused (%d failed appends), node readyz %d; with a bad entry pending: readyz %d, late node readyz %d; "+
		"dead-lettered %v after memory was freed; producer %d appended in all",
		p.failed.Load(), readyAtOOM, readyDuring, n2Ready, deadAfter.Round(time.Millisecond), p.ok.Load())
}

func usedMemory(t testing.TB, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatalf("no used_memory in INFO memory")
	return 0
}

func mustDo(t testing.TB, rdb redis.UniversalClient, args ...any) {
	t.Helper()
	if err := rdb.Do(context.Background(), args...).Err(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

// isPending reports whether id is in some group's pending list.
func isPending(t testing.TB, rdb redis.UniversalClient, id string) bool {
	t.Helper()
	groups, err := rdb.XInfoGroups(context.Background(), "notifications").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		res, err := rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: "notifications", Group: g.Name,
			Start: id, End: id, Count: 1}).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(res) > 0 {
			return true
		}
	}
	return false
}
