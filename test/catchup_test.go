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

// TestCatchUpSkipsWhatWarmRead: a node whose group is far behind moves it
// past what warm start read instead of reading the backlog again, and still
// dead-letters every undecodable entry it skipped: one older than the window
// (found by the background sweep) and one inside it (found by warm start).
// Every good entry stays deliverable: a resume from 0-0 gets all of them in
// order, and live events flow. A sweep cut short by a crash goes on at the
// next start.
func TestCatchUpSkipsWhatWarmRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rs := redistest.Start(t)
	rdb := rs.Client()
	const group = "notifybridge-catchup"
	if err := rdb.XGroupCreateMkStream(ctx, "notifications", group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 400)
	var good []string
	addGood := func(n int) {
		for range n {
			good = append(good, xadd(t, rdb, "notifications", "to", "user:a", "type", "fill", "data", `{"p":"`+pad+`"}`))
		}
	}
	oldBad := xadd(t, rdb, "notifications", "to", "user:a", "type", "fill", "data", `{"unterminated`)
	addGood(1500)
	newBad := xadd(t, rdb, "notifications", "to", "user a", "type", "fill", "data", `{}`)
	addGood(50)

	// 128 KiB holds a few hundred of these: the rest is older than the window.
	args := []string{"--replay-window", "128KiB", "--max-event-bytes", "8KiB", "--retention", "24h"}
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "catchup", Args: args})
	waitGroupAt(t, rdb, group, good[len(good)-1])
	waitSwept(t, rdb, group)
	if got := deadIDs(t, rdb); !slices.Equal(got, []string{oldBad, newBad}) {
		t.Fatalf("dead letters for %v, want one each for %s (older than the window) and %s (warmed)", got, oldBad, newBad)
	}
	if !strings.Contains(n.Out.String(), "group moved past the warmed entries") {
		t.Fatalf("the group was not moved:\n%s", e2e.LastLines(n.Out.String(), 30))
	}

	c := e2e.Dial(t, n.Listen, "user=a&last_event_id=0-0", nil)
	c.WaitControl("caught_up", 20*time.Second)
	live := xadd(t, rdb, "notifications", "to", "user:a", "type", "live", "data", `{}`)
	c.WaitEvents(append(slices.Clone(good), live), 10*time.Second)

	// A crash after the group moved and before the sweep ended: the range
	// left in <stream>:sweeps is swept at the next start.
	n.Kill()
	if err := rdb.Del(ctx, "notifications:dead").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, "notifications:sweeps", group, "0-0 "+good[10]).Err(); err != nil {
		t.Fatal(err)
	}
	n.Start()
	n.WaitReady(30 * time.Second)
	waitSwept(t, rdb, group)
	if got := deadIDs(t, rdb); !slices.Equal(got, []string{oldBad}) {
		t.Fatalf("after a restart mid-sweep: dead letters for %v, want %s", got, oldBad)
	}
}

func waitGroupAt(t *testing.T, rdb *redis.Client, group, last string) {
	t.Helper()
	e2e.WaitFor(t, 20*time.Second, "group at the head, nothing pending", func() error {
		gs, err := rdb.XInfoGroups(context.Background(), "notifications").Result()
		if err != nil {
			return err
		}
		for _, g := range gs {
			if g.Name == group {
				if g.LastDeliveredID != last || g.Pending != 0 {
					return fmt.Errorf("group at %s with %d pending, want %s and 0", g.LastDeliveredID, g.Pending, last)
				}
				return nil
			}
		}
		return fmt.Errorf("no group %s", group)
	})
}

func waitSwept(t *testing.T, rdb *redis.Client, group string) {
	t.Helper()
	e2e.WaitFor(t, 20*time.Second, "sweep done", func() error {
		if ok, err := rdb.HExists(context.Background(), "notifications:sweeps", group).Result(); err != nil || ok {
			return fmt.Errorf("sweep still recorded (%v)", err)
		}
		return nil
	})
}

// deadIDs lists the original ids of the dead letters, oldest first.
func deadIDs(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), "notifications:dead", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range msgs {
		ids = append(ids, fmt.Sprint(m.Values["id"]))
	}
	slices.Sort(ids)
	return ids
}
