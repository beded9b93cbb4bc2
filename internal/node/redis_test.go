package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/internal/faultproxy"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// Connections idle across a partition the network forgot are dead but look
// healthy; the client must not keep them for go-redis's default 30 minutes
// (found by test/fault TestSilentPartitionStateLost: readiness relapsed to
// 503 and ingest stalled for seconds after the heal). A conn_max_idle_time
// in redis_url still wins.
func TestRedisClientDropsIdleConnections(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want time.Duration
	}{
		{"redis://127.0.0.1:1", defaultConnMaxIdle},
		{"redis://127.0.0.1:1?conn_max_idle_time=1m", time.Minute},
		{"redis+cluster://127.0.0.1:1,127.0.0.1:2", defaultConnMaxIdle},
		{"redis+sentinel://127.0.0.1:1/m", defaultConnMaxIdle},
	} {
		cfg := config.Default()
		cfg.RedisURL = tc.url
		rc, err := OpenRedis(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var got time.Duration
		switch c := rc.Client.(type) {
		case *redis.Client:
			got = c.Options().ConnMaxIdleTime
		case *redis.ClusterClient:
			got = c.Options().ConnMaxIdleTime
		default:
			t.Logf("%s: %T exposes no options; checked through the single and cluster clients", tc.url, c)
			rc.Close()
			continue
		}
		rc.Close()
		if got != tc.want {
			t.Errorf("%s: ConnMaxIdleTime %v, want %v", tc.url, got, tc.want)
		}
	}
}

// The mechanism behind TestRedisClientDropsIdleConnections, end to end: five
// connections go idle, the path is cut for longer than defaultConnMaxIdle
// and comes back without them (faultproxy.HealForgetting). With the node's
// client no probe fails after the heal; with go-redis's 30-minute idle
// time (the control) the probes find the dead connections one by one.
func TestRedisClientAfterForgottenPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("partitions for 6 s")
	}
	rs := redistest.Start(t)
	for _, tc := range []struct {
		name      string
		query     string
		wantFails bool
	}{{"node default", "", false}, {"go-redis default (control)", "?conn_max_idle_time=30m", true}} {
		px, err := faultproxy.Start(rs.Addr())
		if err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		cfg.RedisURL = "redis://" + px.Addr() + tc.query
		rc, err := OpenRedis(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		// Five connections in the pool: five commands at once.
		var wg sync.WaitGroup
		for range 5 {
			wg.Add(1)
			go func() { defer wg.Done(); _ = rc.Client.BLPop(ctx, 100*time.Millisecond, "idle-test").Err() }()
		}
		wg.Wait()
		px.Partition()
		time.Sleep(defaultConnMaxIdle + time.Second)
		px.HealForgetting()
		fails := 0
		for range 8 {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			if rc.Client.Ping(pctx).Err() != nil {
				fails++
			}
			cancel()
		}
		rc.Close()
		_ = px.Close()
		t.Logf("%s: %d of 8 probes failed after the heal", tc.name, fails)
		if (fails > 0) != tc.wantFails {
			t.Errorf("%s: %d probes failed after the heal, want failures: %v", tc.name, fails, tc.wantFails)
		}
	}
}
