package fault

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestRedisStalls: Redis stops answering for 3 s (DEBUG SLEEP 3), three
// times under load, with two nodes on it: one with the default
// readiness_grace 0, which turns not-ready during each stall, and one with
// readiness_grace 5s, which stays ready throughout. Both keep their
// connections, and nothing is lost, doubled or left pending.
func TestRedisStalls(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{Extra: []string{"--enable-debug-command", "local"}})
	rdb := rs.Client()
	strict := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "stall-strict"})
	graceful := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "stall-grace",
		Args: []string{"--readiness-grace", "5s"}})
	groups := []string{"ops", "noc", "field"}
	strictNames, graceNames := users("s", 20), users("g", 20)
	strictSess := groupSessions(t, strict.Listen, strictNames, groups)
	graceSess := groupSessions(t, graceful.Listen, graceNames, groups)
	p := startMixedProducer(t, rdb, "notifications", append(append([]string{}, strictNames...), graceNames...), groups, 300)

	// DEBUG SLEEP answers after the sleep: give its client time for that.
	sleeper := redis.NewClient(&redis.Options{Addr: rs.Addr(), ReadTimeout: 30 * time.Second})
	defer sleeper.Close()

	stalls := pick(3, 10)
	var strictDown, graceDown []time.Duration
	for i := range stalls {
		time.Sleep(2 * time.Second) // load between stalls
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var sDown, gDown time.Duration
		wg.Add(2)
		go func() { defer wg.Done(); sDown = notReadyTime(strict.Admin, stop) }()
		go func() { defer wg.Done(); gDown = notReadyTime(graceful.Admin, stop) }()
		start := time.Now()
		if err := sleeper.Do(context.Background(), "DEBUG", "SLEEP", 3).Err(); err != nil {
			t.Fatalf("DEBUG SLEEP: %v", err)
		}
		stalled := time.Since(start)
		// Readiness may lag the stall by a probe (1 s tick + 1 s timeout).
		strict.WaitReady(10 * time.Second)
		time.Sleep(time.Second)
		close(stop)
		wg.Wait()
		strictDown, graceDown = append(strictDown, sDown), append(graceDown, gDown)
		t.Logf("stall %d (%v): readiness_grace 0 not ready %v; readiness_grace 5s not ready %v",
			i, stalled.Round(time.Millisecond), sDown.Round(time.Millisecond), gDown.Round(time.Millisecond))
		if sDown == 0 {
			t.Errorf("stall %d: the node with readiness_grace 0 stayed ready through a %v stall", i, stalled)
		}
		if gDown != 0 {
			t.Errorf("stall %d: the node with readiness_grace 5s was not ready for %v during a %v stall", i, gDown, stalled)
		}
		connsKept(t, strictSess, "during a stall")
		connsKept(t, graceSess, "during a stall")
	}
	finalBroadcast(t, rdb, "notifications")
	p.Stop()
	checkAll(t, rdb, "notifications", strictSess, true, 30*time.Second)
	checkAll(t, rdb, "notifications", graceSess, true, 30*time.Second)
	e2e.WaitFor(t, 20*time.Second, "nothing left pending", func() error {
		if c := pendingCount(t, rdb); c != 0 {
			return fmt.Errorf("%d entries pending", c)
		}
		return nil
	})
	t.Logf("%d stalls of 3 s: producer %d appended, %d failed; not ready per stall: grace 0 max %v, grace 5s max %v",
		stalls, p.ok.Load(), p.failed.Load(), maxDur(strictDown).Round(time.Millisecond), maxDur(graceDown).Round(time.Millisecond))
}

// notReadyTime samples /readyz every 50 ms until stop and returns how long
// it answered 503 (an unreachable admin port counts as not sampled).
func notReadyTime(admin string, stop <-chan struct{}) time.Duration {
	var down time.Duration
	last := time.Now()
	for {
		select {
		case <-stop:
			return down
		default:
		}
		s := readyStatus(admin)
		now := time.Now()
		if s == 503 {
			down += now.Sub(last)
		}
		last = now
		time.Sleep(50 * time.Millisecond)
	}
}
