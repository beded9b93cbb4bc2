package streams

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/redistest"
)

// A group with deleted entries in its unread range has no lag in XINFO
// GROUPS (Redis answers nil); ReadGroupLag must then say how far behind it
// is (XLEN), not -1, or a lag alert could never fire for the node furthest
// behind.
func TestReadGroupLag(t *testing.T) {
	c := redistest.Start(t).Client()
	ctx := ctxT(t)
	if _, found, err := ReadGroupLag(ctx, c, "missing", "g"); err != nil || found {
		t.Fatalf("missing stream: found %v, err %v", found, err)
	}
	addN(t, c, "s", 10)
	if err := c.XGroupCreate(ctx, "s", "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if _, found, err := ReadGroupLag(ctx, c, "s", "other"); err != nil || found {
		t.Fatalf("missing group: found %v, err %v", found, err)
	}
	unread := addN(t, c, "s", 40)
	if _, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{"s", ">"}, Count: 5}).Result(); err != nil {
		t.Fatal(err)
	}
	got, found, err := ReadGroupLag(ctx, c, "s", "g")
	if err != nil || !found || got != (GroupLag{Lag: 45, Pending: 5}) {
		t.Fatalf("ReadGroupLag = %+v %v %v, want lag 45 pending 5", got, found, err)
	}

	// Delete an entry the group has not read (a producer's XDEL, or
	// retention racing the group): Redis can no longer count its lag.
	if err := c.XDel(ctx, "s", unread[9]).Err(); err != nil {
		t.Fatal(err)
	}
	groups, err := c.XInfoGroups(ctx, "s").Result()
	if err != nil || len(groups) != 1 {
		t.Fatalf("XINFO GROUPS: %v %v", groups, err)
	}
	if groups[0].Lag >= 0 {
		t.Skipf("this redis-server computes lag %d after the delete; nothing to fall back from", groups[0].Lag)
	}
	got, found, err = ReadGroupLag(ctx, c, "s", "g")
	if err != nil || !found || got != (GroupLag{Lag: 49, Pending: 5}) {
		t.Fatalf("ReadGroupLag after XDEL = %+v %v %v, want lag 49 (XLEN) pending 5", got, found, err)
	}
}
