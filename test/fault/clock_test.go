package fault

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// futureMs is the id time a producer with a broken clock (or a hand-typed
// id) wrote: 2286-11-20. After it, XADD * keeps generating futureMs-N ids,
// which is also what a Redis whose own clock jumped backwards does: ids
// stay at the newest millisecond and only the sequence grows.
const futureMs = 9999999999999

// TestClockJump: an entry with an explicit id far in the future lands in
// the middle of a producer's appends; every later id shares its
// millisecond. Sessions keep receiving, resume from those ids (last_event_id
// and since), nothing is skipped or doubled, and the delivery latency
// histogram stays sane (future ids count as 0 s, never negative). On a
// second stream, ids at the edges of the id space (1-0, the largest
// millisecond) are delivered and observed without breaking the metrics.
func TestClockJump(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "clock"})
	names := users("c", 20)
	groups := []string{"ops", "noc", "field"}
	sess := groupSessions(t, n.Listen, names, groups)
	p := startMixedProducer(t, rdb, "notifications", names, groups, 200)
	time.Sleep(pick(time.Second, 10*time.Second))

	beforeJump := time.Now().UnixMilli()
	jump, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "notifications", ID: strconv.FormatInt(futureMs, 10) + "-0",
		Values: []any{"to", "*", "type", "clock.jump", "data", `"future"`}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	// An explicit id in the past is impossible now: Redis refuses any id not
	// above the newest one.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "notifications", ID: "1-0", Values: []any{"to", "*", "data", "1"}}).Err(); err == nil ||
		!strings.Contains(err.Error(), "equal or smaller") {
		t.Fatalf("XADD 1-0 after later ids: %v, want Redis to refuse it", err)
	}
	e2e.WaitFor(t, 10*time.Second, "the producer appends after the jump", func() error {
		last, err := rdb.XRevRangeN(ctx, "notifications", "+", "-", 1).Result()
		if err != nil || len(last) == 0 || last[0].ID == jump {
			return fmt.Errorf("newest %v %v", last, err)
		}
		if !strings.HasPrefix(last[0].ID, strconv.FormatInt(futureMs, 10)+"-") {
			t.Fatalf("XADD * after %s generated %s", jump, last[0].ID)
		}
		return nil
	})
	time.Sleep(pick(time.Second, 10*time.Second))

	// Half the sessions reconnect, resuming from ids past the jump.
	for _, r := range sess[:10] {
		if !strings.HasPrefix(r.last(), strconv.FormatInt(futureMs, 10)+"-") {
			t.Fatalf("%s stored %q, want an id after the jump", r.user, r.last())
		}
		r.mustConnect(n.Listen, 10*time.Second)
	}
	// since resumes: from a time before the jump (everything after it, the
	// future entries included) and from the jump's own millisecond.
	sinceBefore := newResumer(t, "c3")
	sinceBefore.groups = sess[3].groups
	sinceBefore.query = "&since=" + strconv.FormatInt(beforeJump, 10)
	sinceFuture := newResumer(t, "c4")
	sinceFuture.groups = sess[4].groups
	sinceFuture.query = "&since=" + time.UnixMilli(futureMs).UTC().Format(time.RFC3339Nano)
	for _, r := range []*resumer{sinceBefore, sinceFuture} {
		r.mustConnect(n.Listen, 10*time.Second)
		r.conns[0].WaitControl("caught_up", 20*time.Second)
	}
	time.Sleep(time.Second)
	finalBroadcast(t, rdb, "notifications")
	p.Stop()
	checkAll(t, rdb, "notifications", sess, true, 30*time.Second)
	want := expected(t, rdb, "notifications", []*resumer{sinceBefore, sinceFuture})
	for _, c := range []struct {
		r    *resumer
		from uint64
	}{{sinceBefore, uint64(beforeJump)}, {sinceFuture, futureMs}} {
		var ids []string
		for _, id := range want[c.r.user] {
			if ms, _ := strconv.ParseUint(strings.SplitN(id, "-", 2)[0], 10, 64); ms >= c.from {
				ids = append(ids, id)
			}
		}
		e2e.WaitFor(t, 20*time.Second, "since resume", func() error { return c.r.check(ids, true) })
		t.Logf("%s%s: all %d events from %d on", c.r.user, c.r.query, len(ids), c.from)
	}
	lat := latency(t, n.Admin)
	t.Logf("latency after the jump: %+v", lat)
	lat.sane(t)
	if lat.zero == 0 {
		t.Errorf("no observation in the lowest bucket although future ids were delivered: %+v", lat)
	}

	// The edges of the id space, on a stream of their own: an id from 1970
	// (possible only while no later id exists), now, and the largest
	// millisecond int64 holds.
	edge := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "clock-edge", Args: []string{"--stream", "edge"}})
	es := groupSessions(t, edge.Listen, users("e", 5), groups)
	for _, id := range []string{"1-0", "*", strconv.FormatInt(math.MaxInt64, 10) + "-0", "*"} {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "edge", ID: id, Values: []any{"to", "*", "type", "edge", "data", `"` + id + `"`}}).Err(); err != nil {
			t.Fatalf("XADD edge %s: %v", id, err)
		}
	}
	checkAll(t, rdb, "edge", es, true, 20*time.Second)
	// A resume from the largest id is not "in the future".
	es[0].mustConnect(edge.Listen, 10*time.Second)
	es[0].conns[len(es[0].conns)-1].WaitControl("caught_up", 10*time.Second)
	el := latency(t, edge.Admin)
	t.Logf("latency on the edge stream: %+v", el)
	el.sane(t)
}

// latencyFigures is notifybridge_delivery_latency_seconds as scraped.
type latencyFigures struct {
	count, sum, zero, inf float64
}

func latency(t testing.TB, admin string) latencyFigures {
	t.Helper()
	m, err := metrics(admin)
	if err != nil {
		t.Fatal(err)
	}
	const name = "notifybridge_delivery_latency_seconds"
	return latencyFigures{count: m[name+"_count"], sum: m[name+"_sum"],
		zero: m[name+`_bucket{le="0.001"}`], inf: m[name+`_bucket{le="+Inf"}`]}
}

// sane: observations were made, none negative or NaN, and every one is in
// a bucket. A delivery from an id of 1970 is a genuine 56-year latency as
// the metric defines it; it lands in +Inf and moves the sum, nothing else.
func (l latencyFigures) sane(t testing.TB) {
	t.Helper()
	if l.count == 0 || l.inf != l.count {
		t.Errorf("latency histogram: %+v, want observations, all counted in +Inf", l)
	}
	if math.IsNaN(l.sum) || math.IsInf(l.sum, 0) || l.sum < 0 {
		t.Errorf("latency sum %v", l.sum)
	}
}

// TestClockIDBeyondInt64: Redis accepts id milliseconds up to 2^64-1; an
// entry with one above 2^63-1 is far in the future and its latency must
// count as 0 s like any future id. The bridge once converted the
// millisecond to int64 (time.UnixMilli(int64(ms))), which wrapped it to 1969
// and observed 56 years per connection instead.
func TestClockIDBeyondInt64(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "clock-max"})
	es := sessions(t, n.Listen, users("x", 5))
	for _, id := range []string{strconv.FormatUint(math.MaxUint64, 10) + "-0", "*"} {
		if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "notifications", ID: id,
			Values: []any{"to", "*", "data", "1"}}).Err(); err != nil {
			t.Fatalf("XADD %s: %v", id, err)
		}
	}
	checkAll(t, rdb, "notifications", es, true, 20*time.Second)
	l := latency(t, n.Admin)
	l.sane(t)
	if l.zero != l.count {
		t.Errorf("latency of ids in the far future: %+v, want every observation in the lowest bucket (%.0f years each on average)",
			l, l.sum/l.count/(365.25*86400))
	}
}
