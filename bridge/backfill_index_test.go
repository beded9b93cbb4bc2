package bridge

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBackfillPageIndex resumes from before the window over pages of many
// entries (users, groups, broadcast, names repeated in one to, types), with
// tiny pulls that stop in the middle of pages, and checks that each cursor
// gets exactly its own due events, in order, once: the page index merges
// the cursor's lists as the scan of every entry did.
func TestBackfillPageIndex(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 9))
	recips := []string{"user:u0", "user:u1", "user:u2", "group:g0", "group:g1", "*",
		"user:u1,user:u1", "group:g0,group:g0", "*,*", "user:u0,group:g1", "group:g0,group:g1,user:u2", "user:nobody"}
	types := []string{"a.x", "a.y", "b"}
	for _, page := range []int{1, 7, 64, 2048} {
		t.Run(fmt.Sprint("page", page), func(t *testing.T) {
			s := newMemStore()
			var evs []*Event
			for i := range 600 {
				evs = append(evs, s.add(t, recips[rnd.IntN(len(recips))], types[rnd.IntN(len(types))], fmt.Sprint(i), uint64(rnd.IntN(2))))
				if rnd.IntN(50) == 0 {
					s.addBad()
				}
			}
			h := newTestHub(t, Config{WindowBytes: 6000, BackfillPage: page}, s)
			for _, cc := range []struct {
				user   string
				groups []string
				types  string
			}{
				{"u0", nil, ""}, {"u1", []string{"g0"}, ""}, {"u2", []string{"g0", "g1"}, "a.*"},
				{"nobody", nil, "b"}, {"zz", []string{"g1"}, ""}, {"zz", nil, ""},
			} {
				from := evs[rnd.IntN(100)]
				q := url.Values{"last_event_id": {from.ID.String()}}
				if cc.types != "" {
					q.Set("types", cc.types)
				}
				filter, err := ParseTypeFilter(cc.types)
				if err != nil {
					t.Fatal(err)
				}
				var want []string
				for _, e := range evs {
					if from.ID.Less(e.ID) && addressedTo(e, cc.user, cc.groups) && filter.Match(e.Type) {
						want = append(want, e.ID.String())
					}
				}
				c := accept(t, h, cc.user, cc.groups, q.Encode(), "")
				deadline := time.Now().Add(5 * time.Second)
				for !c.c.caughtUp || c.pending() {
					if c.pull(t, 1+rnd.IntN(200)) > 0 {
						continue
					}
					if !c.pending() && c.c.caughtUp {
						break
					}
					select {
					case <-c.peer.wakeCh:
					case <-time.After(time.Until(deadline)):
						t.Fatalf("%s: stuck: %s", cc.user, c.summary())
					}
				}
				c.drain(t)
				if got := c.ids(); !slices.Equal(got, want) {
					t.Fatalf("%s %v %q from %s:\ngot  %v\nwant %v", cc.user, cc.groups, cc.types, from.ID, got, want)
				}
				if n := len(c.controls("caught_up")); n != 1 || len(c.controls("gap")) != 0 {
					t.Fatalf("%s: controls %s", cc.user, strings.Join(strings.Fields(c.summary()), " "))
				}
				c.c.Closed()
			}
			if s.ranges.Load() == 0 {
				t.Fatal("no page read")
			}
		})
	}
}
