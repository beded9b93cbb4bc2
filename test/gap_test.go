package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestGapAfterTrim: entries trimmed from the stream and not held by the node
// are reported with a gap frame before the replay of what is still there.
func TestGapAfterTrim(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	// Explicit ids in one millisecond: Redis cannot tell how many entries a
	// trim removed (max-deleted-entry-id moves on XDEL only), so the bridge
	// treats everything before the first entry as possibly lost; with
	// adjacent ids the "lost nothing" resume below is decidable.
	var ids []string
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("1700000000000-%d", i)
		err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "notifications", ID: id,
			Values: []any{"to", "user:u", "data", fmt.Sprint(i)}}).Err()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Trim the first five before the node starts, so its window never held them.
	if err := rdb.XTrimMinID(context.Background(), "notifications", ids[5]).Err(); err != nil {
		t.Fatal(err)
	}
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})

	c := e2e.Dial(t, n.Listen, "user=u&last_event_id="+ids[1], nil)
	c.WaitEvents(ids[5:], 10*time.Second)
	frames := c.Snapshot()
	if frames[0].Control != "gap" || frames[0].Requested != ids[1] || frames[0].Oldest != ids[5] {
		t.Fatalf("first frame = %s, want gap requested %s oldest %s", frames[0].Raw, ids[1], ids[5])
	}
	if cu := c.WaitControl("caught_up", 5*time.Second); cu.Last != ids[9] {
		t.Fatalf("caught_up.last = %s, want %s", cu.Last, ids[9])
	}

	// Resuming from the last trimmed entry lost nothing: no gap.
	c2 := e2e.Dial(t, n.Listen, "user=u&last_event_id="+ids[4], nil)
	c2.WaitEvents(ids[5:], 10*time.Second)
	c2.WaitControl("caught_up", 5*time.Second)
	for _, f := range c2.Snapshot() {
		if f.Control == "gap" {
			t.Fatalf("gap reported for a resume that lost nothing: %s", f.Raw)
		}
	}

	// A since resume reports requested as <ms>-0.
	ms := strings.Split(ids[0], "-")[0]
	c3 := e2e.Dial(t, n.Listen, "user=u&since="+ms, nil)
	c3.WaitEvents(ids[5:], 10*time.Second)
	if f := c3.Snapshot()[0]; f.Control != "gap" || f.Requested != ms+"-0" {
		t.Fatalf("since resume first frame = %s, want gap with requested %s-0", f.Raw, ms)
	}
}

// TestCaughtUpOnEmptyStream: a client with no id on a never-written stream
// is caught up at 0-0 at once.
func TestCaughtUpOnEmptyStream(t *testing.T) {
	rs := redistest.Start(t)
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})
	c := e2e.Dial(t, n.Listen, "user=u", nil)
	if cu := c.WaitControl("caught_up", 5*time.Second); cu.Last != "0-0" {
		t.Fatalf("caught_up.last = %q, want 0-0", cu.Last)
	}
}
