package bench

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
)

// TestMain builds the notifybridge binary (or takes NB_BINARY): the mixed
// test starts it as the bridge and as bench-client processes.
func TestMain(m *testing.M) { e2e.Main(m, "..") }

// TestMixedChurnLosesNothing runs the mixed scenario end to end against a
// started bridge with the embedded Redis, with clients in this process and
// in two bench-client processes. At 20 % a second, 60 % of the clients
// reconnect during the 3 s, each after up to churnAway away, so resumes
// replay what was missed; nothing may be lost or repeated.
func TestMixedChurnLosesNothing(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run("procs-"+strconv.Itoa(procs), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			res, err := Run(ctx, Options{Scenario: "mixed", Clients: 200, Procs: procs, Rate: 400, Duration: 3 * time.Second,
				BroadcastShare: 0.1, Churn: 20, Binary: e2e.Binary})
			if err != nil {
				t.Fatal(err)
			}
			var table strings.Builder
			res.WriteTable(&table)
			t.Logf("\n%s", table.String())
			if res.Lost != 0 || res.Duplicated != 0 || res.Misdelivered != 0 || res.Delivered != res.Expected || res.Failed() {
				t.Fatalf("lost %d duplicated %d misdelivered %d delivered %d of %d",
					res.Lost, res.Duplicated, res.Misdelivered, res.Delivered, res.Expected)
			}
			if res.Published != 1200 || res.Broadcasts == 0 || res.Broadcasts == res.Published {
				t.Errorf("published %d, %d broadcasts: want a mix", res.Published, res.Broadcasts)
			}
			// 20 %/s of 200 clients for 3 s is about 120 reconnects.
			if res.Reconnects < 60 || res.Replayed == 0 {
				t.Errorf("%d reconnects, %d replayed deliveries: the churn did not exercise resume", res.Reconnects, res.Replayed)
			}
			if res.LatencySamples+res.Replayed != res.Delivered {
				t.Errorf("live %d + replayed %d latency samples, %d delivered", res.LatencySamples, res.Replayed, res.Delivered)
			}
			if res.RSSLoadStart <= 0 || res.RSSEnd <= 0 || res.RSSMax < res.RSSEnd || res.GoroutinesEnd <= 0 {
				t.Errorf("RSS start %d end %d max %d, goroutines end %d", res.RSSLoadStart, res.RSSEnd, res.RSSMax, res.GoroutinesEnd)
			}
		})
	}
}

// TestLoadRSSMilestones reads a synthetic timeline: the mixed run's RSS
// start, one-minute, end and peak come from the publishing phase only.
func TestLoadRSSMilestones(t *testing.T) {
	r := &runner{res: &Result{}, loadStartS: 5}
	for s := 0; s <= 130; s += 10 {
		rss := int64(100 + s) // MiB-ish, growing; the peak is mid-run
		if s == 90 {
			rss = 500
		}
		r.res.Timeline = append(r.res.Timeline, point{AtS: float64(s), RSSBytes: rss, Goroutines: int64(s)})
	}
	r.loadRSS()
	res := r.res
	if res.RSSLoadStart != 110 || res.RSSAfter1m != 170 || res.RSSEnd != 230 || res.RSSMax != 500 ||
		res.GoroutinesStart != 10 || res.GoroutinesEnd != 130 {
		t.Fatalf("start %d, 1 min %d, end %d, max %d, goroutines %d → %d",
			res.RSSLoadStart, res.RSSAfter1m, res.RSSEnd, res.RSSMax, res.GoroutinesStart, res.GoroutinesEnd)
	}
}

// TestClientResumeCursor: the id a client resumes from is the newest it
// holds (its events, other runs' events, caught_up and cursor frames), and
// a resumed connection's frames before caught_up are timed as replay.
func TestClientResumeCursor(t *testing.T) {
	var recv, caught atomic.Int64
	var live, replay latencySink
	c := &wsClient{user: 1, tag: runTag("R1"), received: &recv, caught: &caught, replayed: &replay, replaying: true}
	for _, f := range []string{
		`{"id":"5-0","type":"bench","data":{"t":1,"u":1,"r":"R1","p":"x"}}`, // replayed
		`{"control":"caught_up","last":"7-0"}`,
		`{"id":"8-0","type":"bench","data":{"t":1,"r":"R1","p":"x"}}`, // live
		`{"id":"9-0","type":"bench","data":{"t":1,"r":"R2","p":"x"}}`, // another run's
	} {
		c.frame([]byte(f), &live)
	}
	if c.cursor != (streamID{9, 0}) || replay.hist.N != 1 || live.hist.N != 1 || c.unique != 2 {
		t.Fatalf("cursor %v, replayed %d, live %d, unique %d", c.cursor, replay.hist.N, live.hist.N, c.unique)
	}
	c.frame([]byte(`{"control":"cursor","last":"12-3"}`), &live)
	c.frame([]byte(`{"control":"cursor","last":"10-0"}`), &live) // never backwards
	if c.cursor.String() != "12-3" {
		t.Fatalf("cursor %v after cursor frames, want 12-3", c.cursor)
	}
}
