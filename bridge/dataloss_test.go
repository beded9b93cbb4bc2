package bridge

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestRedisDataLoss: Redis loses its data (restart without persistence) while
// a node holds events in its window, and new entries are appended after.
// Resumes get what the window holds, then the new events, with a gap only
// for events in neither place (contract §2): on the node that saw the loss,
// on one started after it, and whether or not new entries came first.
func TestRedisDataLoss(t *testing.T) {
	type want struct {
		gap    bool
		oldest int // index into old (>= 0) or -1 - index into fresh
		events []int
		fresh  int // how many of the fresh events follow
	}
	tests := []struct {
		name       string
		window     int64 // window bytes of the node that saw the loss
		newBefore  int   // fresh entries appended before the resume
		resumeFrom int   // index into old; -1: since the first old event's time
		restarted  bool  // the client resumes on a node started after the loss
		groupOnly  bool  // only the group was deleted; the stream is intact
		// behind > 0: no restart; a replica promoted without the newest
		// behind entries becomes the stream (with the group), and goes on
		// after a hole where they were, recording nothing deleted.
		behind    int
		futureErr bool
		want      want
	}{
		{name: "inside the window, before any new entry", window: 1 << 20, resumeFrom: 24,
			want: want{events: span(25, 50), fresh: 3}},
		{name: "inside the window, after new entries", window: 1 << 20, newBefore: 5, resumeFrom: 24,
			want: want{events: span(25, 50), fresh: 8}},
		{name: "older than the window: gap to the window", window: 3000, newBefore: 2, resumeFrom: 0,
			want: want{gap: true, oldest: windowOldest, fresh: 5}},
		{name: "since, older than the window", window: 3000, newBefore: 2, resumeFrom: -1,
			want: want{gap: true, oldest: windowOldest, fresh: 5}},
		{name: "on a node started after the loss", window: 1 << 20, newBefore: 4, resumeFrom: 24, restarted: true,
			want: want{gap: true, oldest: -1, fresh: 7}},
		{name: "the last lost id, on a node started after the loss", window: 1 << 20, newBefore: 4, resumeFrom: 49, restarted: true,
			want: want{gap: true, oldest: -1, fresh: 7}},
		{name: "on a node started after the loss, nothing appended yet", window: 1 << 20, resumeFrom: 24, restarted: true,
			futureErr: true},
		{name: "group deleted, stream intact: no gap", window: 3000, newBefore: 2, resumeFrom: 0, groupOnly: true,
			want: want{events: span(1, 50), fresh: 5}},
		{name: "replica promoted behind, on the node that read what it lacks", window: 1 << 20, newBefore: 4, resumeFrom: 45, behind: 10,
			want: want{events: span(46, 50), fresh: 7}},
		{name: "replica promoted behind, an id it never had, on a node started after", window: 1 << 20, newBefore: 4, resumeFrom: 45, behind: 10, restarted: true,
			want: want{gap: true, oldest: 0, fresh: 7}},
		{name: "replica promoted behind, the old primary's last id, on a node started after", window: 1 << 20, newBefore: 4, resumeFrom: 49, behind: 10, restarted: true,
			want: want{gap: true, oldest: 0, fresh: 7}},
		{name: "replica promoted behind, an id it has, on a node started after: unknowable, no gap", window: 1 << 20, newBefore: 4, resumeFrom: 30, behind: 10, restarted: true,
			want: want{events: span(31, 40), fresh: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newMemStore()
			var old []*Event
			for i := range 50 {
				old = append(old, s.add(t, "user:u", "", fmt.Sprint(i), 1))
			}
			h := newTestHub(t, Config{WindowBytes: tt.window}, s)
			for _, ev := range old {
				if h.Append(ev) {
					t.Fatalf("warmed event %s appended again", ev.ID)
				}
			}
			if tt.window == 3000 {
				if o, _ := h.w.oldestLocked(); !old[0].ID.Less(o) {
					t.Fatalf("window holds from %s: the test needs it to have evicted", o)
				}
			}
			switch {
			case tt.behind > 0:
				s.mu.Lock()
				s.entries = s.entries[:len(s.entries)-tt.behind]
				s.lastGen = s.entries[len(s.entries)-1].id
				s.mu.Unlock()
			case !tt.groupOnly:
				s.flush()
			}
			if tt.behind == 0 {
				if at := h.GroupRecreated(); at != old[49].ID {
					t.Fatalf("GroupRecreated returned %s, want the head %s", at, old[49].ID)
				}
			}
			var fresh []*Event
			addFresh := func(n int) {
				for range n {
					ev := s.add(t, "user:u", "", `"new"`, 1)
					fresh = append(fresh, ev)
					if !h.Append(ev) {
						t.Fatalf("Append(%s) after the loss = false", ev.ID)
					}
				}
			}
			addFresh(tt.newBefore)
			// What the window holds when the client connects, as an index of old.
			held := len(old)
			if o, ok := h.w.oldestLocked(); ok {
				held = slices.IndexFunc(old, func(e *Event) bool { return e.ID == o })
			}
			if tt.want.oldest == windowOldest {
				tt.want.oldest, tt.want.events = held, span(held, len(old))
			}
			node := h
			if tt.restarted {
				node = newTestHub(t, Config{}, s)
			}
			query := "since=" + fmt.Sprint(old[0].ID.Ms)
			if tt.resumeFrom >= 0 {
				query = "last_event_id=" + old[tt.resumeFrom].ID.String()
			}
			c, err := tryAccept(node, "u", nil, query, "")
			if tt.futureErr {
				if err == nil || !strings.Contains(err.Error(), "id is in the future") {
					t.Fatalf("Accept: %v, want id is in the future", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.drain(t)
			addFresh(3)
			if tt.restarted {
				for _, ev := range fresh[len(fresh)-3:] {
					node.Append(ev)
				}
			}
			c.drain(t)

			gaps := c.controls("gap")
			if tt.want.gap != (len(gaps) == 1) || len(gaps) > 1 {
				t.Fatalf("gap frames %v, want gap %v: %s", gaps, tt.want.gap, c.summary())
			}
			if tt.want.gap {
				requested := old[max(tt.resumeFrom, 0)].ID.String()
				if tt.resumeFrom < 0 {
					requested = ID{Ms: old[0].ID.Ms}.String()
				}
				oldest := ""
				if tt.want.oldest >= 0 {
					oldest = old[tt.want.oldest].ID.String()
				} else {
					oldest = fresh[-1-tt.want.oldest].ID.String()
				}
				if g := gaps[0]; g.Requested != requested || g.Oldest != oldest {
					t.Fatalf("gap %v, want requested %s oldest %s", g, requested, oldest)
				}
			}
			var wantIDs []string
			for _, i := range tt.want.events {
				wantIDs = append(wantIDs, old[i].ID.String())
			}
			wantIDs = append(wantIDs, idsOf(fresh[len(fresh)-tt.want.fresh:]...)...)
			if got := c.ids(); !slices.Equal(got, wantIDs) {
				t.Fatalf("events\n got %v\nwant %v\n%s", got, wantIDs, c.summary())
			}
		})
	}
}

// windowOldest in a want: the gap names the oldest event the window holds
// at connect, and the events from there follow.
const windowOldest = -1 << 30

// span is the indexes [from, to).
func span(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}
