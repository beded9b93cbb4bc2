package node

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// A group with deleted entries in its unread range has no lag in XINFO
// GROUPS (Redis answers nil); the gauge must then say how far behind it is, not -1,
// or NotifybridgeIngestLag could never fire for the node furthest behind.
func TestProberLagWhenRedisCannotCompute(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	cfg := config.Default()
	cfg.Stream, cfg.NodeID = "lagtest", "n1"
	add := func(n int) {
		for range n {
			if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: cfg.Stream, Values: []any{"to", "*", "data", "1"}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(10)
	if err := rdb.XGroupCreate(ctx, cfg.Stream, cfg.Group(), "0").Err(); err != nil {
		t.Fatal(err)
	}
	add(40)
	// Delete an entry the group has not read (a producer's XDEL, or
	// retention racing the group): Redis can no longer count its lag.
	unread, err := rdb.XRangeN(ctx, cfg.Stream, "-", "+", 20).Result()
	if err != nil || len(unread) < 20 {
		t.Fatalf("XRANGE: %v", err)
	}
	if err := rdb.XDel(ctx, cfg.Stream, unread[19].ID).Err(); err != nil {
		t.Fatal(err)
	}
	groups, err := rdb.XInfoGroups(ctx, cfg.Stream).Result()
	if err != nil || len(groups) != 1 {
		t.Fatalf("XINFO GROUPS: %v %v", groups, err)
	}
	if groups[0].Lag >= 0 {
		t.Skipf("this redis-server computes lag %d after the trim; nothing to fall back from", groups[0].Lag)
	}

	ready := &Readiness{}
	tel := newTelemetry(prometheus.NewRegistry(), "test", ready, 0)
	p := startProber(rdb, ready, tel, cfg, zap.NewNop())
	defer p.Close()
	deadline := time.Now().Add(5 * time.Second)
	lag := func() float64 {
		var m dto.Metric
		_ = tel.groupLag.Write(&m)
		return m.GetGauge().GetValue()
	}
	for lag() != 49 {
		if time.Now().After(deadline) {
			t.Fatalf("lag gauge %v, want 49 (XLEN: every entry left is unread)", lag())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readiness_grace: a failed probe counts only once Redis has gone
// unanswered for longer than the grace; 0 keeps the first failure decisive.
func TestRedisHealthGrace(t *testing.T) {
	t0 := time.Unix(1000, 0)
	fail := context.DeadlineExceeded
	h := redisHealth{grace: 0, lastOK: t0}
	if !h.observe(t0, t0.Add(10*time.Millisecond), nil) {
		t.Fatal("an answered probe must count as answering")
	}
	if h.observe(t0.Add(time.Second), t0.Add(2*time.Second), fail) {
		t.Fatal("grace 0: the first failed probe must turn not-ready")
	}

	h = redisHealth{grace: 5 * time.Second, lastOK: t0}
	// A 3 s stall: the probes sent at +1 s and +2 s time out at +2 s and +3 s.
	for _, at := range []time.Duration{2 * time.Second, 3 * time.Second} {
		if !h.observe(t0.Add(at-time.Second), t0.Add(at), fail) {
			t.Fatalf("grace 5s: a probe failing %v after the last answer turned not-ready", at)
		}
	}
	// The one sent at +3 s is answered: the clock starts again from there.
	if !h.observe(t0.Add(3*time.Second), t0.Add(3500*time.Millisecond), nil) {
		t.Fatal("answered probe")
	}
	if !h.observe(t0.Add(7*time.Second), t0.Add(8*time.Second-time.Millisecond), fail) {
		t.Fatal("grace counts from the last answered probe")
	}
	// Unanswered for longer than the grace: not ready.
	if h.observe(t0.Add(8*time.Second), t0.Add(9*time.Second), fail) {
		t.Fatal("grace 5s: unanswered for 5.5 s must turn not-ready")
	}
}
