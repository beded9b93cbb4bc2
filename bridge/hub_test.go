package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	var c Config
	c.setDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if c.WindowBytes != 64<<20 || c.CursorInterval != 30*time.Second {
		t.Fatalf("defaults %+v", c)
	}
	for _, tt := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.WindowBytes = -1 }, "replay_window: must be > 0"},
		{func(c *Config) { c.CursorInterval = -time.Second }, "cursor_interval: must be > 0"},
		{func(c *Config) { c.BackfillPage = -1 }, "backfill_page: must be > 0"},
		{func(c *Config) { c.BackfillBytes = -1 }, "backfill_cache: must be > 0"},
	} {
		c := Config{}
		tt.mut(&c)
		_, err := NewHub(c, newMemStore())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("got %v, want %q", err, tt.want)
		}
	}
}

// live connects a set of connections with no resume parameter.
func TestTargeting(t *testing.T) {
	s := newMemStore()
	h := newTestHub(t, Config{}, s)
	alice := accept(t, h, "alice", []string{"ops", "noc"}, "", "")
	bob := accept(t, h, "bob", []string{"ops"}, "", "")
	carol := accept(t, h, "carol", nil, "", "")
	al := accept(t, h, "al", []string{"op"}, "", "") // near-miss names
	all := []*tconn{alice, bob, carol, al}
	for _, c := range all {
		c.drain(t)
	}
	var evs []*Event
	add := func(to string) *Event {
		ev := s.add(t, to, "", `{"to":"`+to+`"}`, 1)
		if !h.Append(ev) {
			t.Fatalf("Append(%s) false", ev.ID)
		}
		evs = append(evs, ev)
		return ev
	}
	e1 := add("user:alice")
	e2 := add("group:ops")
	e3 := add("*")
	e4 := add("user:alice,group:ops,group:noc,user:alice") // named several times
	e5 := add("user:alic,group:ops2,group:op,user:bobby")  // near misses but al's group
	e6 := add("group:noc,user:carol")
	for _, c := range all {
		c.drain(t)
	}
	for _, tt := range []struct {
		c    *tconn
		want []*Event
	}{
		{alice, []*Event{e1, e2, e3, e4, e6}},
		{bob, []*Event{e2, e3, e4}},
		{carol, []*Event{e3, e6}},
		{al, []*Event{e3, e5}},
	} {
		if got := tt.c.ids(); !slices.Equal(got, idsOf(tt.want...)) {
			t.Errorf("%s: got %v, want %v", tt.c.c.userID(), got, idsOf(tt.want...))
		}
	}
	// Frames are the event's shared bytes, byte for byte.
	alice.bufs = alice.c.Pull(alice.bufs[:0], 1<<20)
	if len(alice.bufs) != 0 {
		t.Fatalf("more frames after drain: %d", len(alice.bufs))
	}
	ev := add("user:alice")
	alice.bufs = alice.c.Pull(alice.bufs[:0], 1<<20)
	if len(alice.bufs) != 1 || &alice.bufs[0][0] != &ev.Frame[0] {
		t.Fatalf("frame is not the event's shared frame")
	}
}

func TestTypesFilter(t *testing.T) {
	s := newMemStore()
	h := newTestHub(t, Config{}, s)
	c := accept(t, h, "u", nil, "types=alarm.*,test.done", "")
	c.drain(t)
	var want []string
	for _, typ := range []string{"alarm.fiber_break", "alarm", "test.done", "test.done.x", "notification", "alarm."} {
		ev := s.add(t, "user:u", typ, `1`, 1)
		h.Append(ev)
		if typ == "alarm.fiber_break" || typ == "test.done" || typ == "alarm." {
			want = append(want, ev.ID.String())
		}
	}
	c.drain(t)
	if got := c.ids(); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestCaughtUp(t *testing.T) {
	t.Run("never written stream", func(t *testing.T) {
		h := newTestHub(t, Config{}, newMemStore())
		c := accept(t, h, "u", nil, "", "")
		c.drain(t)
		if c.summary() != "caught_up(last=0-0 req= old=) " {
			t.Fatalf("got %s", c.summary())
		}
	})
	t.Run("live and resume", func(t *testing.T) {
		s := newMemStore()
		h := newTestHub(t, Config{}, s)
		e1 := s.add(t, "user:u", "", "1", 1)
		e2 := s.add(t, "group:g", "", "2", 1)
		h.Append(e1)
		h.Append(e2)
		live := accept(t, h, "u", []string{"g"}, "", "")
		resumed := accept(t, h, "u", []string{"g"}, "last_event_id=0-0", "")
		e3 := s.add(t, "*", "", "3", 1)
		h.Append(e3) // appended before the first Pull: after caught_up
		live.drain(t)
		resumed.drain(t)
		head := e2.ID.String()
		if got, want := live.summary(), "caught_up(last="+head+" req= old=) "+e3.ID.String()+" "; got != want {
			t.Errorf("live: %s, want %s", got, want)
		}
		if got, want := resumed.summary(), fmt.Sprintf("%s %s caught_up(last=%s req= old=) %s ", e1.ID, e2.ID, head, e3.ID); got != want {
			t.Errorf("resumed: %s, want %s", got, want)
		}
		e4 := s.add(t, "*", "", "4", 1)
		h.Append(e4)
		live.drain(t)
		if n := len(live.controls("caught_up")); n != 1 {
			t.Errorf("caught_up %d times", n)
		}
	})
	t.Run("cursor ahead of this node", func(t *testing.T) {
		s := newMemStore()
		h := newTestHub(t, Config{}, s)
		e1 := s.add(t, "user:u", "", "1", 1)
		e2 := s.add(t, "user:u", "", "2", 1)
		e3 := s.add(t, "user:u", "", "3", 1)
		h.Append(e1) // this node has only e1; the client saw e2 elsewhere
		c := accept(t, h, "u", nil, "last_event_id="+e2.ID.String(), "")
		c.drain(t)
		h.Append(e2)
		h.Append(e3)
		c.drain(t)
		if got, want := c.summary(), fmt.Sprintf("caught_up(last=%s req= old=) %s ", e2.ID, e3.ID); got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	})
	t.Run("future id", func(t *testing.T) {
		s := newMemStore()
		h := newTestHub(t, Config{}, s)
		e1 := s.add(t, "user:u", "", "1", 1)
		h.Append(e1)
		_, err := tryAccept(h, "u", nil, "last_event_id="+e1.ID.Next().String(), "")
		if err == nil || err.Error() != "last_event_id: id is in the future" || !errors.Is(err, ErrBadQuery) {
			t.Fatalf("got %v", err)
		}
		_, err = tryAccept(h, "u", nil, "", "99999999999999-0")
		if err == nil || err.Error() != "Last-Event-ID: id is in the future" {
			t.Fatalf("got %v", err)
		}
	})
}

func TestResumeInWindow(t *testing.T) {
	s := newMemStore()
	h := newTestHub(t, Config{}, s)
	var evs []*Event
	for i := range 6 {
		ev := s.add(t, "user:u", "", fmt.Sprint(i), 5)
		h.Append(ev)
		evs = append(evs, ev)
	}
	reads := s.ranges.Load() + s.infos.Load() + s.revs.Load()
	for _, tt := range []struct {
		name, query, header string
		want                []*Event
	}{
		{"last_event_id", "last_event_id=" + evs[2].ID.String(), "", evs[3:]},
		{"header", "", evs[4].ID.String(), evs[5:]},
		{"query wins over header", "last_event_id=" + evs[1].ID.String(), evs[4].ID.String(), evs[2:]},
		{"since ms inclusive", fmt.Sprintf("since=%d", evs[3].ID.Ms), "", evs[3:]},
		{"since RFC 3339", "since=" + time.UnixMilli(int64(evs[2].ID.Ms)).UTC().Format(time.RFC3339Nano), "", evs[2:]},
		{"since between", fmt.Sprintf("since=%d", evs[3].ID.Ms-1), "", evs[3:]},
		{"from the start", "last_event_id=0-0", "", evs},
	} {
		c := accept(t, h, "u", nil, tt.query, tt.header)
		c.drain(t)
		if got := c.ids(); !slices.Equal(got, idsOf(tt.want...)) {
			t.Errorf("%s: got %v, want %v", tt.name, got, idsOf(tt.want...))
		}
		if len(c.controls("gap")) != 0 {
			t.Errorf("%s: gap inside the window", tt.name)
		}
		c.c.Closed()
	}
	if now := s.ranges.Load() + s.infos.Load() + s.revs.Load(); now != reads {
		t.Errorf("resume inside the window read Redis %d times", now-reads)
	}
}

func TestEviction(t *testing.T) {
	s := newMemStore()
	h := newTestHub(t, Config{WindowBytes: 1200}, s)
	slow := accept(t, h, "slow", nil, "", "")
	idle := accept(t, h, "idle", nil, "", "")
	other := accept(t, h, "other", nil, "", "")
	for _, c := range []*tconn{slow, idle, other} {
		c.drain(t)
	}
	first := s.add(t, "user:slow,user:idle", "", "0", 1)
	h.Append(first)
	idle.drain(t) // idle is caught up, slow is not
	for i := range 20 {
		h.Append(s.add(t, "user:other", "", fmt.Sprint(i), 1))
		other.drain(t)
	}
	slow.drain(t)
	idle.drain(t)
	other.drain(t)
	if code := slow.peer.closeCode(); code != CloseTryAgainLater {
		t.Fatalf("slow: close code %d, want 1013", code)
	}
	if len(slow.ids()) != 0 {
		t.Fatalf("slow got %v after its event left", slow.ids())
	}
	if code := idle.peer.closeCode(); code != 0 {
		t.Fatalf("idle caught-up connection closed with %d", code)
	}
	if code := other.peer.closeCode(); code != 0 {
		t.Fatalf("reading connection closed with %d", code)
	}
	// The slow one resumes from Redis and gets what it missed.
	re := accept(t, h, "slow", nil, "last_event_id=0-0", "")
	re.drain(t)
	if got := re.ids(); !slices.Equal(got, idsOf(first)) {
		t.Fatalf("resume after 1013: %v", got)
	}
}

func TestCursorFrames(t *testing.T) {
	s := newMemStore()
	h := newTestHub(t, Config{CursorInterval: 20 * time.Millisecond}, s)
	c := accept(t, h, "quiet", nil, "", "")
	c.drain(t)
	// Nothing happens: no cursor frame (its position did not move).
	time.Sleep(60 * time.Millisecond)
	c.drain(t)
	if len(c.controls("cursor")) != 0 {
		t.Fatalf("cursor frame on an idle stream: %s", c.summary())
	}
	var last *Event
	for i := range 3 {
		last = s.add(t, "user:someone", "", fmt.Sprint(i), 1)
		h.Append(last)
	}
	waitFor(t, 2*time.Second, "a cursor frame", func() bool {
		select {
		case <-c.peer.wakeCh:
			c.drain(t)
		case <-time.After(10 * time.Millisecond):
		}
		return len(c.controls("cursor")) > 0
	})
	if got := c.controls("cursor"); len(got) != 1 || got[0].Last != last.ID.String() {
		t.Fatalf("cursor frames %v, want one with last %s", got, last.ID)
	}
}

func TestWarm(t *testing.T) {
	s := newMemStore()
	var evs []*Event
	for i := range 50 {
		evs = append(evs, s.add(t, "user:u", "", fmt.Sprint(i), 1))
	}
	s.addBad() // newest entry does not decode: the group starts before it
	h, err := NewHub(Config{WindowBytes: 3000, BackfillPage: 7}, s)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	newest, err := h.Warm(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if newest != evs[49].ID {
		t.Fatalf("newest %s, want %s", newest, evs[49].ID)
	}
	if h.Head() != s.lastGen {
		t.Fatalf("head %s, want last generated %s", h.Head(), s.lastGen)
	}
	h.w.mu.RLock()
	held, complete, bytes := h.w.lenLocked(), h.w.complete, h.w.bytes
	oldest, _ := h.w.oldestLocked()
	h.w.mu.RUnlock()
	if held == 0 || held == 50 || bytes > 3000 {
		t.Fatalf("held %d events, %d bytes", held, bytes)
	}
	if complete != evs[50-held-1].ID || oldest != evs[50-held].ID {
		t.Fatalf("complete %s oldest %s, held %d", complete, oldest, held)
	}
	if h.Append(evs[49]) {
		t.Fatalf("Append of a warmed event returned true")
	}
	if _, err := h.Warm(context.Background()); err == nil {
		t.Fatalf("second Warm after serving accepted")
	}
}

// TestAcceptClosed: a closed Hub refuses connections (the transport answers
// 503). Identities are checked by the transport (transport/wspool's
// TestJWT), not here.
func TestAcceptClosed(t *testing.T) {
	h := newTestHub(t, Config{}, newMemStore())
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tryAccept(h, "u", nil, "", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func (c *countingHooks) Appended()     { c.mu.Lock(); c.appended++; c.mu.Unlock() }
func (c *countingHooks) Evicted(n int) { c.mu.Lock(); c.evicted += n; c.mu.Unlock() }
func (c *countingHooks) WindowSize(n int, b int64) {
	c.mu.Lock()
	c.windowEvents, c.windowBytes = n, b
	c.mu.Unlock()
}
func (c *countingHooks) Resumed(s ResumeSource)  { c.mu.Lock(); c.resumed[s]++; c.mu.Unlock() }
func (c *countingHooks) BackfillRead(int)        { c.mu.Lock(); c.reads++; c.mu.Unlock() }
func (c *countingHooks) Gap()                    { c.mu.Lock(); c.gaps++; c.mu.Unlock() }
func (c *countingHooks) SlowClosed(cause string) { c.mu.Lock(); c.slow[cause]++; c.mu.Unlock() }
func (c *countingHooks) Lag(time.Duration)       { c.mu.Lock(); c.lags++; c.mu.Unlock() }
func (c *countingHooks) RedisLostData()          { c.mu.Lock(); c.losses++; c.mu.Unlock() }

func TestHooks(t *testing.T) {
	hooks := &countingHooks{resumed: map[ResumeSource]int{}, slow: map[string]int{}}
	s := newMemStore()
	h := newTestHub(t, Config{WindowBytes: 1000, BackfillPage: 2, Hooks: hooks}, s)
	live := accept(t, h, "u", nil, "", "")
	live.drain(t)
	slow := accept(t, h, "u", nil, "", "")
	var evs []*Event
	for i := range 10 {
		ev := s.add(t, "user:u", "", fmt.Sprint(i), 1)
		h.Append(ev)
		evs = append(evs, ev)
		live.drain(t)
	}
	slow.drain(t)
	s.trim(2)
	inWindow := accept(t, h, "u", nil, "last_event_id="+evs[8].ID.String(), "")
	inWindow.drain(t)
	fromStore := accept(t, h, "u", nil, "last_event_id=0-0", "")
	fromStore.drain(t)
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	if hooks.appended != 10 || hooks.evicted == 0 || hooks.windowEvents == 0 || hooks.windowBytes > 1000 {
		t.Errorf("window hooks: %+v", hooks)
	}
	if hooks.resumed[ResumeFromLive] != 2 || hooks.resumed[ResumeFromWindow] != 1 || hooks.resumed[ResumeFromStore] != 1 {
		t.Errorf("resumed %v", hooks.resumed)
	}
	if hooks.gaps != 1 || hooks.reads == 0 || hooks.slow[closeEvicted.cause] != 1 || hooks.lags == 0 {
		t.Errorf("gaps %d reads %d slow %v lags %d", hooks.gaps, hooks.reads, hooks.slow, hooks.lags)
	}
}

// TestEvictionTypesFilter: a filtered connection that lags behind events of
// types it does not want is not closed when they leave the window (it reads
// them back from Redis to find out); one that lags behind a wanted type is.
func TestEvictionTypesFilter(t *testing.T) {
	s := newMemStore()
	h := newTestHub(t, Config{WindowBytes: 1200, BackfillPage: 4}, s)
	spared := accept(t, h, "u", nil, "types=alarm.*", "")
	closed := accept(t, h, "u", nil, "types=chat", "")
	spared.drain(t)
	closed.drain(t)
	for i := range 20 {
		h.Append(s.add(t, "user:u", "chat", fmt.Sprint(i), 1))
	}
	alarm := s.add(t, "user:u", "alarm.x", "1", 1)
	h.Append(alarm)
	spared.drain(t)
	closed.drain(t)
	if code := spared.peer.closeCode(); code != 0 || !slices.Equal(spared.ids(), idsOf(alarm)) {
		t.Fatalf("spared: code %d, got %v", code, spared.ids())
	}
	if code := closed.peer.closeCode(); code != CloseTryAgainLater {
		t.Fatalf("closed: code %d, want 1013", code)
	}
	if s.ranges.Load() == 0 {
		t.Fatal("the filtered connection did not read back from Redis")
	}
}
