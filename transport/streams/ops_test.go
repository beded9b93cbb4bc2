package streams

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

func TestDeadLetterListAndRequeue(t *testing.T) {
	c := redistest.Start(t).Client()
	ctx := ctxT(t)
	dl, err := NewDeadLetter(c, "s", 1000)
	if err != nil {
		t.Fatal(err)
	}
	first, err := dl.Write(ctx, "1-1", map[string]string{"to": "user:a", "data": "{bad"}, "data: is not valid JSON")
	if err != nil {
		t.Fatal(err)
	}
	second, err := dl.Write(ctx, "2-1", map[string]string{"to": "friend:a", "data": "1", "_notifybridge_entry_id": "2-1"}, "to: bad item")
	if err != nil {
		t.Fatal(err)
	}
	list, err := dl.List(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].DeadID != second || list[1].DeadID != first {
		t.Fatalf("list = %+v, want newest first", list)
	}
	if got := list[0]; got.OrigID != "2-1" || got.Reason != "to: bad item" || len(got.Original) != 2 || got.Original["to"] != "friend:a" {
		t.Fatalf("entry = %+v", got)
	}

	newID, err := dl.Requeue(ctx, "s", first)
	if err != nil {
		t.Fatal(err)
	}
	back, err := c.XRange(ctx, "s", newID, newID).Result()
	if err != nil || len(back) != 1 {
		t.Fatalf("requeued entry: %v %v", back, err)
	}
	if v := back[0].Values; len(v) != 2 || v["to"] != "user:a" || v["data"] != "{bad" {
		t.Fatalf("requeued fields = %v, want the original ones only", v)
	}
	if n, _ := c.XLen(ctx, "s:dead").Result(); n != 1 {
		t.Fatalf("dead letters after requeue = %d, want 1", n)
	}
	if _, err := dl.Requeue(ctx, "s", first); !errors.Is(err, ErrNoDeadLetter) {
		t.Fatalf("second requeue: %v, want ErrNoDeadLetter", err)
	}
}

func TestExpireGroups(t *testing.T) {
	c := redistest.Start(t).Client()
	ctx := ctxT(t)
	addN(t, c, "s", 3)
	// The node's groups, named as the node names them.
	const p = config.GroupPrefix
	for _, g := range []string{p + "old", p + "live", p + "me", "other-app", p + "empty"} {
		if err := c.XGroupCreate(ctx, "s", g, "0").Err(); err != nil {
			t.Fatal(err)
		}
	}
	read := func(group string) {
		t.Helper()
		err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{"s", ">"}, Count: 1, Block: -1}).Err()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
	}
	for _, g := range []string{p + "old", "other-app", p + "me"} {
		read(g)
	}
	// Wait until the consumers above are idle past the TTL, then touch the live one.
	const ttl = 50 * time.Millisecond
	waitFor(t, 5*time.Second, func() error {
		cs, err := c.XInfoConsumers(ctx, "s", p+"old").Result()
		if err != nil || len(cs) != 1 || cs[0].Idle <= ttl {
			return fmt.Errorf("consumers %v %v", cs, err)
		}
		return nil
	})
	read(p + "live")

	deleted, err := ExpireGroups(ctx, c, "s", p, p+"me", ttl)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deleted, []string{p + "old"}) {
		t.Fatalf("deleted %v, want only notifybridge-old (own, live, foreign and consumer-less groups stay)", deleted)
	}
	if deleted, err := ExpireGroups(ctx, c, "missing", p, "x", ttl); err != nil || deleted != nil {
		t.Fatalf("missing stream: %v %v", deleted, err)
	}
}
