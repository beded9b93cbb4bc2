package bridge

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestGap(t *testing.T) {
	// A window of about two events so older resumes go to the store.
	small := Config{WindowBytes: 500}
	type setup struct {
		s   *memStore
		h   *Hub
		evs []*Event
	}
	mk := func(t *testing.T, hide bool, n, trim int) setup {
		s := newMemStore()
		s.hideMaxDel = hide
		h := newTestHub(t, small, s)
		var evs []*Event
		for i := range n {
			ev := s.add(t, "user:u", "", fmt.Sprint(i), 10)
			h.Append(ev)
			evs = append(evs, ev)
		}
		s.trim(trim)
		return setup{s, h, evs}
	}
	t.Run("trimmed after the requested id", func(t *testing.T) {
		x := mk(t, false, 8, 4)
		c := accept(t, x.h, "u", nil, "last_event_id="+x.evs[1].ID.String(), "")
		c.drain(t)
		want := fmt.Sprintf("gap(last= req=%s old=%s) ", x.evs[1].ID, x.evs[4].ID)
		if !strings.HasPrefix(c.summary(), want) {
			t.Fatalf("got %s, want prefix %s", c.summary(), want)
		}
		if got := c.ids(); !slices.Equal(got, idsOf(x.evs[4:]...)) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("requested id is the last trimmed: no gap", func(t *testing.T) {
		x := mk(t, false, 8, 4)
		c := accept(t, x.h, "u", nil, "last_event_id="+x.evs[3].ID.String(), "")
		c.drain(t)
		if len(c.controls("gap")) != 0 || !slices.Equal(c.ids(), idsOf(x.evs[4:]...)) {
			t.Fatalf("got %s", c.summary())
		}
	})
	t.Run("since reports ms-0", func(t *testing.T) {
		x := mk(t, false, 8, 4)
		c := accept(t, x.h, "u", nil, fmt.Sprintf("since=%d", x.evs[2].ID.Ms), "")
		c.drain(t)
		want := fmt.Sprintf("gap(last= req=%d-0 old=%s) ", x.evs[2].ID.Ms, x.evs[4].ID)
		if !strings.HasPrefix(c.summary(), want) {
			t.Fatalf("got %s, want prefix %s", c.summary(), want)
		}
	})
	t.Run("trimmed but still in the window: no gap", func(t *testing.T) {
		s := newMemStore()
		h := newTestHub(t, Config{}, s)
		var evs []*Event
		for i := range 5 {
			ev := s.add(t, "user:u", "", fmt.Sprint(i), 10)
			h.Append(ev)
			evs = append(evs, ev)
		}
		s.trim(5)
		c := accept(t, h, "u", nil, "last_event_id=0-0", "")
		c.drain(t)
		if len(c.controls("gap")) != 0 || !slices.Equal(c.ids(), idsOf(evs...)) {
			t.Fatalf("got %s", c.summary())
		}
	})
	t.Run("stream trimmed to empty", func(t *testing.T) {
		s := newMemStore()
		for i := range 4 {
			s.add(t, "user:u", "", fmt.Sprint(i), 10)
		}
		s.trim(4)
		h := newTestHub(t, small, s)
		c := accept(t, h, "u", nil, "last_event_id=0-0", "")
		c.drain(t)
		if got, want := c.summary(), fmt.Sprintf("gap(last= req=0-0 old=%s) caught_up(last=%s req= old=) ", s.lastGen, s.lastGen); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	})
	t.Run("max deleted unknown is conservative", func(t *testing.T) {
		// Nothing was ever trimmed, but miniredis cannot say so: a resume
		// from before the first entry reports a possible gap.
		s := newMemStore()
		s.hideMaxDel = true
		for i := range 4 {
			s.add(t, "user:u", "", fmt.Sprint(i), 10)
		}
		h := newTestHub(t, Config{}, s)
		c := accept(t, h, "u", nil, "last_event_id=0-0", "")
		c.drain(t)
		if len(c.controls("gap")) != 1 || len(c.ids()) != 4 {
			t.Fatalf("got %s", c.summary())
		}
		first, _ := s.firstID()
		c2 := accept(t, h, "u", nil, "last_event_id="+first.Prev().String(), "")
		c2.drain(t)
		if len(c2.controls("gap")) != 0 || len(c2.ids()) != 4 {
			t.Fatalf("resume right before the first entry: %s", c2.summary())
		}
	})
}

func TestBackfillThenWindow(t *testing.T) {
	s := newMemStore()
	var evs []*Event
	for i := range 40 {
		to := "user:u"
		if i%3 == 0 {
			to = "user:other"
		}
		ev := s.add(t, to, "", fmt.Sprint(i), 1)
		if i%7 == 0 {
			s.addBad()
		}
		evs = append(evs, ev)
	}
	h := newTestHub(t, Config{WindowBytes: 2000, BackfillPage: 4}, s)
	h.w.mu.RLock()
	complete, held := h.w.complete, h.w.lenLocked()
	h.w.mu.RUnlock()
	if held == 0 || held >= 40 || complete.IsZero() {
		t.Fatalf("warm held %d, complete %s", held, complete)
	}
	var want []string
	for _, ev := range evs[5:] {
		if ev.To == "user:u" {
			want = append(want, ev.ID.String())
		}
	}
	c := accept(t, h, "u", nil, "last_event_id="+evs[4].ID.String(), "")
	// Live events arrive while the resume pages through Redis.
	for i := range 3 {
		ev := s.add(t, "user:u", "", fmt.Sprint(100+i), 1)
		h.Append(ev)
		want = append(want, ev.ID.String())
		c.pull(t, 60)
	}
	c.drain(t)
	if got := c.ids(); !slices.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	if len(c.controls("gap")) != 0 || len(c.controls("caught_up")) != 1 {
		t.Fatalf("controls: %s", c.summary())
	}
	if s.ranges.Load() == 0 {
		t.Fatalf("no page read")
	}
}

func TestBackfillSharesPages(t *testing.T) {
	s := newMemStore()
	for i := range 30 {
		s.add(t, fmt.Sprintf("user:u%d,*", i%5), "", fmt.Sprint(i), 1)
	}
	h := newTestHub(t, Config{WindowBytes: 1500, BackfillPage: 8}, s)
	gate := make(chan struct{})
	s.gate = gate
	first, _ := s.firstID()
	const n = 200
	conns := make([]*tconn, n)
	for i := range conns {
		conns[i] = accept(t, h, fmt.Sprintf("u%d", i%5), nil, "last_event_id="+first.String(), "")
		conns[i].pull(t, 1<<20) // requests the first page
	}
	close(gate)
	for _, c := range conns {
		c.drain(t)
	}
	for i, c := range conns {
		if len(c.ids()) != 29 || len(c.controls("caught_up")) != 1 {
			t.Fatalf("conn %d: %d events, %s", i, len(c.ids()), c.summary())
		}
	}
	// 29 entries after first, page 8, until the window: a handful of reads
	// whatever the number of connections.
	if r := s.ranges.Load(); r > 6 {
		t.Fatalf("%d XRANGE reads for %d resumes", r, n)
	}
	t.Logf("%d XRANGE reads for %d resumes", s.ranges.Load(), n)
}
