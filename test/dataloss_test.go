package test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestRedisDataLoss (issue 12): Redis restarts without its data while a node
// holds 50 events for each of 10 users in its window. A resume from before
// the loss gets what the window holds after its id, then the new events, and
// no gap (contract §2: a gap only for events in neither the stream nor the
// node), before and after new entries were appended. On a node that was not
// running during the loss, and on the first node after it restarted, the
// lost events are in neither place: the resume gets a gap naming the oldest
// new entry, then the new events.
func TestRedisDataLoss(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	a := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "loss-a"})
	const users, perUser = 10, 50
	live := make([]*e2e.Client, users)
	for u := range users {
		live[u] = e2e.Dial(t, a.Listen, fmt.Sprintf("user=u%d", u), nil)
		live[u].WaitControl("caught_up", 10*time.Second)
	}
	before := make([][]string, users) // ids per user, before the loss
	for range perUser {
		for u := range users {
			before[u] = append(before[u], xaddTo(t, rdb, fmt.Sprintf("user:u%d", u)))
		}
	}
	for u := range users {
		live[u].WaitEvents(before[u], 15*time.Second)
	}

	// SHUTDOWN NOSAVE, then the same port with nothing: the data is gone.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = rdb.ShutdownNoSave(ctx).Err()
	cancel()
	rs.Stop()
	rs.Start()
	e2e.WaitFor(t, 30*time.Second, "node a recreates its group", func() error {
		if !strings.Contains(a.Out.String(), "consumer group was lost") {
			return fmt.Errorf("no recreation logged yet")
		}
		return nil
	})
	a.WaitReady(30 * time.Second)

	// Before any new entry: the window's 25 events after the id, no gap.
	c := e2e.Dial(t, a.Listen, "user=u0&last_event_id="+before[0][24], nil)
	c.WaitEvents(before[0][25:], 10*time.Second)
	c.WaitControl("caught_up", 5*time.Second)
	noGap(t, c)

	after := make([][]string, users)
	for range 5 {
		for u := range users {
			after[u] = append(after[u], xaddTo(t, rdb, fmt.Sprintf("user:u%d", u)))
		}
	}
	for u := range users {
		live[u].WaitEvents(append(slices.Clone(before[u]), after[u]...), 15*time.Second)
	}
	firstNew := after[0][0]

	// After new entries: the window's events, then the new ones, no gap.
	c = e2e.Dial(t, a.Listen, "user=u1&last_event_id="+before[1][24], nil)
	c.WaitEvents(append(slices.Clone(before[1][25:]), after[1]...), 10*time.Second)
	c.WaitControl("caught_up", 5*time.Second)
	noGap(t, c)
	if n := value(scrape(t, a.Admin), "notifybridge_redis_data_loss_total"); n < 1 {
		t.Errorf("notifybridge_redis_data_loss_total = %v after the loss, want >= 1", n)
	}

	// A node that was not running during the loss: the lost events are in
	// neither place.
	b := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "loss-b"})
	c = e2e.Dial(t, b.Listen, "user=u2&last_event_id="+before[2][24], nil)
	c.WaitEvents(after[2], 10*time.Second)
	wantGap(t, c, before[2][24], firstNew)

	// The node that saw the loss, restarted: its window is warmed from the
	// new, short stream.
	a.Kill()
	a.Start()
	a.WaitReady(30 * time.Second)
	c = e2e.Dial(t, a.Listen, "user=u3&last_event_id="+before[3][24], nil)
	c.WaitEvents(after[3], 10*time.Second)
	wantGap(t, c, before[3][24], firstNew)

	// Nothing doubled or lost live, across the loss.
	for u := range users {
		if got, want := live[u].Events(), append(slices.Clone(before[u]), after[u]...); !slices.Equal(got, want) {
			t.Errorf("u%d live: got %d events, want %d", u, len(got), len(want))
		}
	}
}

func xaddTo(t testing.TB, rdb *redis.Client, to string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "notifications", Values: []any{"to", to, "data", `{"k":1}`}}).Result()
	if err != nil {
		t.Fatalf("XADD: %v", err)
	}
	return id
}

func noGap(t testing.TB, c *e2e.Client) {
	t.Helper()
	for _, f := range c.Snapshot() {
		if f.Control == "gap" {
			t.Fatalf("gap %s where the window held every missed event", f.Raw)
		}
	}
}

func wantGap(t testing.TB, c *e2e.Client, requested, oldest string) {
	t.Helper()
	fs := c.Snapshot()
	if len(fs) == 0 || fs[0].Control != "gap" || fs[0].Requested != requested || fs[0].Oldest != oldest {
		t.Fatalf("first frame %v, want gap requested %s oldest %s", fs, requested, oldest)
	}
}
