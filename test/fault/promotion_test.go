package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// Roles of the sessions in TestReplicaPromotedBehind.
const (
	promoStay  = iota // keeps its connection to node A throughout
	promoHopA         // hops on A, also while it fails over
	promoHopAC        // hops on A, offline across the failover, then between A and C (started after it)
	promoLate         // offline from just before replication is cut until C runs
	promoRoles
)

// TestReplicaPromotedBehind: a primary, one replica and a Sentinel; node A
// reads through redis+sentinel:// while a producer appends every shape of
// `to` and 20 sessions hop. Replication is then cut so the replica misses
// the newest entries, the primary dies and Sentinel promotes the replica.
// Sessions that hold ids the new master never had resume on A (whose window
// holds those entries: the events, no gap) and on node C, started after the
// failover (which never read them: a gap, or nothing for the last one).
//
// The cut is deterministic: the primary's default user loses the right to
// PSYNC and SYNC (ACL SETUSER default -psync -sync) and its replica link is
// killed (CLIENT KILL TYPE replica), so the replica stays a replica, with
// its link down, holding a prefix of the stream it can read back exactly;
// nothing the test does not choose reaches it afterwards. Before the
// primary is shut down (SHUTDOWN NOSAVE), its writes are paused until A has
// read everything (frozenRead), so the test knows what A held. Then
// SENTINEL FAILOVER promotes the replica at once (rather than after
// down-after-milliseconds and a vote, which only adds seconds).
//
// A producer that WAITs for one replica after XADD is told 0 for an entry
// appended after the cut, and that entry is indeed missing on the new
// master; one WAITed for before the cut survives.
func TestReplicaPromotedBehind(t *testing.T) {
	ctx := context.Background()
	const stream = "notifications"
	primary := redistest.Start(t, redistest.Options{Extra: []string{"--repl-diskless-sync-delay", "0"}})
	replica := redistest.Start(t, redistest.Options{Extra: []string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.Port)}})
	pc, rc := primary.Client(), replica.Client()
	e2e.WaitFor(t, 20*time.Second, "replica linked", func() error {
		if up, err := linkUp(rc); err != nil || !up {
			return fmt.Errorf("link not up: %v", err)
		}
		return nil
	})
	sp := startSentinel(t, primary.Port)
	sent := redis.NewSentinelClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(sp)})
	t.Cleanup(func() { _ = sent.Close() })
	e2e.WaitFor(t, 20*time.Second, "sentinel sees the replica", func() error {
		r, err := sent.Replicas(ctx, "mymaster").Result()
		if err == nil && len(r) == 0 {
			err = fmt.Errorf("no replica known yet")
		}
		return err
	})
	url := fmt.Sprintf("redis+sentinel://127.0.0.1:%d/mymaster", sp)
	args := []string{"--redis-retry-backoff", "500ms", "--ingest-block", "500ms"}
	a := e2e.StartNode(t, e2e.NodeOptions{RedisURL: url, NodeID: "promo-a", Args: args})
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "mymaster", SentinelAddrs: []string{"127.0.0.1:" + strconv.Itoa(sp)}})
	t.Cleanup(func() { _ = rdb.Close() })

	// The seed is WAITed for: the replica holds it, and so will the new master.
	seed := waitedAdd(t, pc, stream, "*", 1)
	waitAppended(t, a.Admin, 1)
	names := users("r", pick(20, 100))
	groups := []string{"ops", "noc", "field", "empty-but-watched"}
	ss := trackedSessions(t, a.Listen, "A1", seed, names, groups, promoRoles)
	p := startMixedProducer(t, rdb, stream, names, groups, pick(200, 400))
	hopSeed := rand.Uint64()
	t.Logf("hop seed %d", hopSeed)
	onA := func(*tracked, *rand.Rand) (string, string) { return a.Listen, "A1" }
	hA := startHops(byRole(ss, promoHopA), hopSeed, onA)
	h := startHops(byRole(ss, promoHopAC), hopSeed+1, onA)
	time.Sleep(pick(2*time.Second, 20*time.Second))
	moves := h.wait(t)
	for _, s := range byRole(ss, promoLate) {
		c, _ := s.current()
		c.Close() // back once C runs
	}

	// Cut replication; what the replica holds now is all it will have.
	if err := pc.Do(ctx, "ACL", "SETUSER", "default", "-psync", "-sync").Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	if err := pc.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatalf("CLIENT KILL TYPE replica: %v", err)
	}
	e2e.WaitFor(t, 10*time.Second, "replica link down", func() error {
		if up, err := linkUp(rc); err != nil || up {
			return fmt.Errorf("link still up: %v", err)
		}
		return nil
	})
	rLastMsg, err := rc.XRevRangeN(ctx, stream, "+", "-", 1).Result()
	if err != nil || len(rLastMsg) == 0 {
		t.Fatalf("replica XREVRANGE: %v %v", rLastMsg, err)
	}
	rLast := rLastMsg[0].ID
	unsafe := waitedAdd(t, pc, stream, "user:nobody", 0) // WAIT 1 says 0: at risk
	time.Sleep(pick(time.Second, 5*time.Second))         // the replica misses all of this
	for _, s := range byRole(ss, promoHopAC) {
		c, _ := s.current()
		c.Close() // holding ids the new master never had; back once C runs
	}
	// An entry for nobody after they left, so what follows their ids on the
	// primary is never empty: a gap is due on a node that never read it.
	if err := pc.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"to", "user:nobody", "type", "marker", "data", `"marker"`}}).Err(); err != nil {
		t.Fatal(err)
	}

	// The primary dies with everything read by A; Sentinel promotes the replica.
	hist := frozenRead(t, pc, stream)
	shutdownNoSave(pc)
	primary.Stop()
	downAt := time.Now()
	e2e.WaitFor(t, 20*time.Second, "SENTINEL FAILOVER", func() error {
		err := sent.Failover(ctx, "mymaster").Err()
		if err != nil && strings.Contains(err.Error(), "INPROG") {
			return nil
		}
		return err
	})
	e2e.WaitFor(t, 30*time.Second, "replica promoted", func() error {
		addr, err := sent.GetMasterAddrByName(ctx, "mymaster").Result()
		if err != nil {
			return err
		}
		if addr[1] != strconv.Itoa(replica.Port) {
			return fmt.Errorf("master still %v", addr)
		}
		return nil
	})
	promoted := time.Since(downAt)
	a.WaitReady(30 * time.Second)
	ready := time.Since(downAt)
	mLast := hist[len(hist)-1].ID
	t.Logf("replica holds up to %s; the primary had %d more entries, up to %s; promoted %v after the primary died, A ready %v after",
		rLast, countAfter(hist, rLast), mLast, promoted.Round(time.Millisecond), ready.Round(time.Millisecond))

	// Node C starts once the new master has entries past everything lost,
	// so no stored id is ahead of its stream ("id is in the future").
	e2e.WaitFor(t, 20*time.Second, "new entries on the new master", func() error {
		last, err := rc.XRevRangeN(ctx, stream, "+", "-", 1).Result()
		if err != nil || len(last) == 0 || !idLess(mLast, last[0].ID) {
			return fmt.Errorf("newest %v: %v", last, err)
		}
		return nil
	})
	c := e2e.StartNode(t, e2e.NodeOptions{RedisURL: url, NodeID: "promo-c", Args: args})
	for _, s := range byRole(ss, promoLate) {
		addr, node := a.Listen, "A1"
		if half(s) {
			addr, node = c.Listen, "C"
		}
		if err := s.connectRetry(addr, node, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		moves++
	}
	h = startHops(byRole(ss, promoHopAC), hopSeed+2, splitFirstMove(ss, c.Listen, "C", a.Listen, "A1"))
	time.Sleep(pick(3*time.Second, 30*time.Second))
	moves += h.wait(t) + hA.wait(t)
	finalBroadcast(t, rdb, stream)
	p.Stop()
	connsKept(t, resumers(byRole(ss, promoStay)), "through the failover")

	// The facts: the primary's stream as A read it, the new master's now.
	now, err := rc.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var newer []redis.XMessage
	for i, m := range now {
		switch {
		case !idLess(rLast, m.ID):
			if i >= len(hist) || hist[i].ID != m.ID {
				t.Fatalf("new master's entry %d is %s; the primary's was %v: the replica should hold a prefix", i, m.ID, hist[min(i, len(hist)-1)].ID)
			}
		case idLess(mLast, m.ID):
			newer = append(newer, m)
		default:
			t.Fatalf("new master holds %s, between the replica's last %s and the primary's %s", m.ID, rLast, mLast)
		}
	}
	o := newOracle()
	o.add(t, hist)
	o.add(t, newer)
	o.hold("A1", hist)
	o.hold("A1", newer)
	o.hold("C", now)
	// C holds the ids up to the replica's last entry and the new ones: after
	// those, the new master's stream looks whole (nothing recorded deleted),
	// so what the primary lost after them is unknowable to C.
	unknowable := func(node, from string) bool { return node == "C" && o.held["C"][from] }
	tl := checkSessions(t, o, ss, unknowable, 30*time.Second)
	if !o.held["C"][seed] || o.held["C"][unsafe] {
		t.Errorf("WAIT: the seed (WAIT 1 → 1) on the new master %v, the entry after the cut (WAIT 1 → 0) %v",
			o.held["C"][seed], o.held["C"][unsafe])
	}
	if n := metric(t, a.Admin, "notifybridge_resume_gaps_total"); n != 0 {
		t.Errorf("A sent %v gaps; its window held everything", n)
	}
	t.Logf("%d sessions, %d moves, %d connections; %d entries lost in the failover; producer %d appended, %d failed; "+
		"%d deliveries checked against what was due; %d gap frames (%d due %v, %d conservative); "+
		"%d deliveries unknowable to C (resumes from ids it holds, of sessions offline across the cut)",
		len(ss), moves, tl.conns, countAfter(hist, rLast), p.ok.Load(), p.failed.Load(),
		tl.deliveries, tl.gaps, tl.gapsDue, tl.byNode, tl.conservative, tl.unknown)
	for _, n := range tl.notes {
		t.Logf("conservative gap: %s", n)
	}
}

// linkUp reports whether a replica's link to its master is up.
func linkUp(rc *redis.Client) (bool, error) {
	info, err := rc.Info(context.Background(), "replication").Result()
	if err != nil {
		return false, err
	}
	return strings.Contains(info, "master_link_status:up"), nil
}

// waitedAdd appends an entry for to and WAITs (1 s) for one replica, as a
// producer that must not lose an event across a failover does; it fails
// the test unless WAIT reports want replicas. Both go in one pipeline: WAIT
// counts the replicas that hold its own connection's writes, and a pooled
// client may run a separate WAIT on another connection, which then waits
// for nothing.
func waitedAdd(t testing.TB, rdb *redis.Client, stream, to string, want int64) string {
	t.Helper()
	ctx := context.Background()
	pipe := rdb.Pipeline()
	add := pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"to", to, "type", "waited", "data", `"waited"`}})
	wait := pipe.Do(ctx, "WAIT", 1, 1000)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("XADD + WAIT: %v", err)
	}
	n, err := wait.Int64()
	if err != nil || n != want {
		t.Fatalf("WAIT 1 after %s: %d replicas (%v), want %d", add.Val(), n, err, want)
	}
	return add.Val()
}

func countAfter(msgs []redis.XMessage, id string) int {
	n := 0
	for _, m := range msgs {
		if idLess(id, m.ID) {
			n++
		}
	}
	return n
}
