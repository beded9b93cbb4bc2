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

// TestSentinelFailover: a master, a replica and two sentinels; the node
// reads through redis+sentinel://. SENTINEL FAILOVER during load promotes
// the replica; the node follows it without dropping connections and every
// session ends with every event the new master holds for it. The producer
// WAITs for one replica after each append, so what it was told is durable
// survives the failover; replication is asynchronous, so a session may also
// hold events the new master never got (allowed, not required).
func TestSentinelFailover(t *testing.T) {
	master := redistest.Start(t)
	replica := redistest.Start(t, redistest.Options{Extra: []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port)}})
	rc := replica.Client()
	e2e.WaitFor(t, 10*time.Second, "replica linked", func() error {
		info, err := rc.Info(context.Background(), "replication").Result()
		if err != nil || !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("link not up: %v", err)
		}
		return nil
	})
	s1, s2 := startSentinel(t, master.Port), startSentinel(t, master.Port)
	sent := redis.NewSentinelClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(s1)})
	defer sent.Close()
	e2e.WaitFor(t, 20*time.Second, "sentinel sees the replica", func() error {
		r, err := sent.Replicas(context.Background(), "mymaster").Result()
		if err == nil && len(r) == 0 {
			err = fmt.Errorf("no replica known yet")
		}
		return err
	})

	url := fmt.Sprintf("redis+sentinel://127.0.0.1:%d,127.0.0.1:%d/mymaster", s1, s2)
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: url, NodeID: "sentinel"})
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "mymaster",
		SentinelAddrs: []string{"127.0.0.1:" + strconv.Itoa(s1), "127.0.0.1:" + strconv.Itoa(s2)}})
	t.Cleanup(func() { _ = rdb.Close() })
	names := users("u", pick(10, 50))
	rs := sessions(t, n.Listen, names)
	p := startProducer(t, rdb, "notifications", names, 200, 1)
	time.Sleep(pick(2*time.Second, 20*time.Second))
	baseG := metric(t, n.Admin, "go_goroutines")

	if err := sent.Failover(context.Background(), "mymaster").Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	e2e.WaitFor(t, 20*time.Second, "replica promoted", func() error {
		addr, err := sent.GetMasterAddrByName(context.Background(), "mymaster").Result()
		if err != nil {
			return err
		}
		if addr[1] != strconv.Itoa(replica.Port) {
			return fmt.Errorf("master still %v", addr)
		}
		return nil
	})
	t.Logf("failover done; producer %d appended, %d failed so far", p.ok.Load(), p.failed.Load())
	time.Sleep(pick(3*time.Second, 20*time.Second))
	p.Stop()
	// The CLI opens Redis the same way as serve: publish through Sentinel.
	if out, err := e2e.RunCLI(t, 20*time.Second, "publish", "--redis-url", url, "--to", "user:u0", "--data", `"via sentinel"`); err != nil {
		t.Fatalf("publish via %s: %v\n%s", url, err, out)
	}
	n.WaitReady(20 * time.Second)
	for _, r := range rs {
		if len(r.conns) != 1 || isDone(r.conns[0]) {
			t.Errorf("%s: connection did not survive the failover (code %d)", r.user, r.conns[0].Code())
		}
	}
	checkAll(t, rdb, "notifications", rs, false, 30*time.Second)
	g := waitGoroutinesBack(t, n.Admin, baseG, 10, 20*time.Second)
	t.Logf("producer: %d appended, %d failed; goroutines %v → %v", p.ok.Load(), p.failed.Load(), baseG, g)
}

func isDone(c *e2e.Client) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// TestCluster: the node reads a stream on a real three-master Redis Cluster
// through redis+cluster://. With the stream named {notifications}, the
// dead-letter stream {notifications}:dead hashes to the same slot (so both
// live on one shard and one failure domain); the bridge issues no
// multi-key command, so an untagged name works too, with its dead letters
// on whichever shard owns them.
func TestCluster(t *testing.T) {
	addrs := startCluster(t, 0)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = rdb.Close() })
	url := "redis+cluster://" + strings.Join(addrs[:2], ",")
	for _, stream := range []string{"{notifications}", "notifications"} {
		t.Run(stream, func(t *testing.T) {
			ctx := context.Background()
			s1, _ := rdb.ClusterKeySlot(ctx, stream).Result()
			s2, _ := rdb.ClusterKeySlot(ctx, stream+":dead").Result()
			if tagged := strings.HasPrefix(stream, "{"); tagged != (s1 == s2) {
				t.Fatalf("slots %d and %d for %s and its dead letters", s1, s2, stream)
			}
			n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: url, NodeID: "cluster-" + strconv.Itoa(int(s1)),
				Args: []string{"--stream", stream}})
			names := users("u", 10)
			rs := sessions(t, n.Listen, names)
			p := startProducer(t, rdb, stream, names, 300, 0)
			time.Sleep(time.Second)
			bad, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"to", "user:nobody", "data", "{not json"}}).Result()
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			p.Stop()
			if out, err := e2e.RunCLI(t, 20*time.Second, "publish", "--redis-url", url, "--stream", stream,
				"--to", "user:u1", "--data", `"via cluster"`); err != nil {
				t.Fatalf("publish via %s: %v\n%s", url, err, out)
			}
			checkAll(t, rdb, stream, rs, true, 30*time.Second)
			e2e.WaitFor(t, 10*time.Second, "dead letter", func() error {
				dead, err := rdb.XRange(ctx, stream+":dead", "-", "+").Result()
				if err == nil && (len(dead) != 1 || dead[0].Values["id"] != bad) {
					err = fmt.Errorf("dead letters %v, want one for %s", dead, bad)
				}
				return err
			})
			for _, r := range rs {
				for _, c := range r.conns {
					for _, id := range c.Events() {
						if id == bad {
							t.Fatalf("%s received the bad entry", r.user)
						}
					}
				}
			}
		})
	}
}

// TestClusterFailover: three masters with one replica each; during load the
// replica of the shard holding {notifications} takes over (CLUSTER
// FAILOVER). The node follows the slot to the new master without dropping a
// connection, and every session ends with every event the new master holds.
func TestClusterFailover(t *testing.T) {
	addrs := startCluster(t, 1)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = rdb.Close() })
	const stream = "{notifications}"
	ctx := context.Background()
	slot, err := rdb.ClusterKeySlot(ctx, stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	var replica string
	e2e.WaitFor(t, 20*time.Second, "the slot's replica", func() error {
		shards, err := rdb.ClusterShards(ctx).Result()
		if err != nil {
			return err
		}
		for _, sh := range shards {
			for _, r := range sh.Slots {
				if r.Start > slot || slot > r.End {
					continue
				}
				for _, nd := range sh.Nodes {
					if nd.Role == "replica" && nd.Health == "online" {
						replica = net.JoinHostPort(nd.IP, strconv.FormatInt(nd.Port, 10))
						return nil
					}
				}
				return fmt.Errorf("slot %d has no online replica yet", slot)
			}
		}
		return fmt.Errorf("slot %d not served", slot)
	})
	url := "redis+cluster://" + strings.Join(addrs[:3], ",")
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: url, NodeID: "cluster-failover", Args: []string{"--stream", stream}})
	names := users("u", pick(10, 50))
	rs := sessions(t, n.Listen, names)
	p := startProducer(t, rdb, stream, names, 200, 1)
	time.Sleep(pick(2*time.Second, 20*time.Second))

	rc := redis.NewClient(&redis.Options{Addr: replica})
	defer rc.Close()
	if err := rc.ClusterFailover(ctx).Err(); err != nil {
		t.Fatalf("CLUSTER FAILOVER on %s: %v", replica, err)
	}
	e2e.WaitFor(t, 20*time.Second, "replica promoted", func() error {
		info, err := rc.Info(ctx, "replication").Result()
		if err != nil || !strings.Contains(info, "role:master") {
			return fmt.Errorf("%s not master yet: %v", replica, err)
		}
		return nil
	})
	t.Logf("failover of slot %d to %s done; producer %d appended, %d failed so far", slot, replica, p.ok.Load(), p.failed.Load())
	time.Sleep(pick(3*time.Second, 20*time.Second))
	p.Stop()
	for _, r := range rs {
		if len(r.conns) != 1 || isDone(r.conns[0]) {
			t.Errorf("%s: connection did not survive the failover (code %d)", r.user, r.conns[0].Code())
		}
	}
	checkAll(t, rdb, stream, rs, false, 30*time.Second)
	t.Logf("producer: %d appended, %d failed", p.ok.Load(), p.failed.Load())
}
