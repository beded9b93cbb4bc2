package bridge

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchPeer remembers that it was woken; the benchmark plays the drainer.
type benchPeer struct{ woken atomic.Bool }

func (p *benchPeer) Wake()             { p.woken.Store(true) }
func (p *benchPeer) Close(int, string) {}

// BenchmarkDispatch measures, per event, the whole live path: Append into the
// window (with eviction in steady state), waking every recipient, and each
// recipient's Pull of the shared frame. The event is built in the loop
// (NewEvent: 2 allocations, the ingest decoder's cost); nothing else should
// allocate, whatever the number of recipients.
func BenchmarkDispatch(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		for _, target := range []string{"group", "users"} {
			b.Run(fmt.Sprintf("recipients=%d/%s", n, target), func(b *testing.B) {
				benchDispatch(b, n, target)
			})
		}
	}
}

func benchDispatch(b *testing.B, n int, target string) {
	h, err := NewHub(Config{WindowBytes: 4 << 20, CursorInterval: time.Hour}, newMemStore())
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	if _, err := h.Warm(context.Background()); err != nil {
		b.Fatal(err)
	}
	type conn struct {
		c    *Cursor
		p    *benchPeer
		bufs [][]byte
	}
	conns := make([]conn, n)
	to := "group:g"
	if target == "users" {
		// One to with n user items (max_recipients allows up to 1000; the
		// benchmark goes beyond to show the per-recipient cost).
		to = ""
	}
	for i := range conns {
		p := &benchPeer{}
		user := "u" + strconv.Itoa(i)
		c, err := h.Accept(p, Identity{User: user, Groups: []string{"g"}}, ResumeQuery{})
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = conn{c: c, p: p, bufs: make([][]byte, 0, 16)}
		conns[i].bufs = c.Pull(conns[i].bufs[:0], 1<<16)
		p.woken.Store(false)
		if target == "users" {
			if to != "" {
				to += ","
			}
			to += "user:" + user
		}
	}
	lim := Limits{MaxEventBytes: 65536, MaxRecipients: n}
	data := `{"fiber":"F-12","km":3.2}`
	ms := uint64(1700000000000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev, err := NewEvent(ID{Ms: ms + uint64(i)}, "alarm.fiber_break", to, data, lim)
		if err != nil {
			b.Fatal(err)
		}
		h.Append(ev)
		for j := range conns {
			c := &conns[j]
			if c.p.woken.Swap(false) {
				c.bufs = c.c.Pull(c.bufs[:0], 1<<16)
				if len(c.bufs) != 1 {
					b.Fatalf("pulled %d frames", len(c.bufs))
				}
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/recipient")
	for j := range conns {
		conns[j].c.Closed()
	}
}

// BenchmarkReconnectStorm: 10k connections resume at once from the same id
// inside the window, each missing 10 events of its own: accept, pull the
// replay and caught_up, close. One op is the whole storm; no Redis read.
func BenchmarkReconnectStorm(b *testing.B) {
	const clients, missed = 10000, 10
	s := newMemStore()
	h, err := NewHub(Config{WindowBytes: 256 << 20, CursorInterval: time.Hour}, s)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	if _, err := h.Warm(context.Background()); err != nil {
		b.Fatal(err)
	}
	resumeFrom := s.add(b, "user:nobody", "", "0", 1)
	h.Append(resumeFrom)
	for range missed {
		for u := range clients {
			h.Append(s.add(b, "user:u"+strconv.Itoa(u), "alarm.x", `{"n":1}`, 0))
		}
	}
	query := url.Values{"last_event_id": {resumeFrom.ID.String()}}
	users := make([]string, clients)
	for u := range users {
		users[u] = "u" + strconv.Itoa(u)
	}
	bufs := make([][]byte, 0, 32)
	reads := s.ranges.Load() + s.revs.Load() + s.infos.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, user := range users {
			c, err := h.Accept(&benchPeer{}, Identity{User: user}, mustQuery(b, query))
			if err != nil {
				b.Fatal(err)
			}
			bufs = c.Pull(bufs[:0], 1<<16)
			if len(bufs) != missed+1 {
				b.Fatalf("pulled %d frames, want %d", len(bufs), missed+1)
			}
			c.Closed()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/clients, "ns/client")
	if got := s.ranges.Load() + s.revs.Load() + s.infos.Load() - reads; got != 0 {
		b.Fatalf("%d Redis reads during the storm", got)
	}
}

// BenchmarkReconnectStormFromRedis: 10k connections resume at once (64
// handshakes in parallel, Redis round trip 200 µs) from the same id older
// than the window (200 entries of history to page through, 10 of them each
// client's own). Pages and XINFO calls are shared: the Redis calls per storm
// are reported and stay flat however many clients there are. The page cache
// outlives a storm, so later storms read less than the first.
func BenchmarkReconnectStormFromRedis(b *testing.B) {
	s := newMemStore()
	resumeFrom := s.add(b, "user:nobody", "", "0", 1)
	for i := range 200 {
		s.add(b, "user:u"+strconv.Itoa(i%20), "alarm.x", `{"n":1}`, 1)
	}
	stormFromRedis(b, s, resumeFrom, 10000, 20, Config{WindowBytes: 8 << 10, BackfillPage: 64, CursorInterval: time.Hour})
}

// BenchmarkReconnectStormFromRedisWide: the shape of the end-to-end storm,
// scaled down: 10k connections of distinct users resume from the same id
// over 50 000 entries older than the window, 40 000 of them filler and one
// event of each client's own spread through it. The cost that matters is
// how a cursor finds its own few events in pages mostly for others.
func BenchmarkReconnectStormFromRedisWide(b *testing.B) {
	const clients = 10000
	s := newMemStore()
	resumeFrom := s.add(b, "user:nobody", "", "0", 1)
	for i := range 50000 {
		to := "user:filler"
		if i%5 == 0 {
			to = "user:u" + strconv.Itoa(i/5)
		}
		s.add(b, to, "alarm.x", `{"n":1}`, 1)
	}
	stormFromRedis(b, s, resumeFrom, clients, clients, Config{WindowBytes: 64 << 10, CursorInterval: time.Hour})
}

// stormFromRedis runs the storm: clients connect as users u0..u<users-1>
// (round robin) resuming from resumeFrom, and are pulled until all caught up.
func stormFromRedis(b *testing.B, s *memStore, resumeFrom *Event, clients, users int, cfg Config) {
	s.rtt = 200 * time.Microsecond
	h, err := NewHub(cfg, s)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	if _, err := h.Warm(context.Background()); err != nil {
		b.Fatal(err)
	}
	query := url.Values{"last_event_id": {resumeFrom.ID.String()}}
	type conn struct {
		c    *Cursor
		p    *benchPeer
		done bool
	}
	conns := make([]conn, clients)
	bufs := make([][]byte, 0, 64)
	ranges, infos := s.ranges.Load(), s.infos.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		const par = 64
		for k := range par {
			wg.Go(func() {
				for j := k; j < clients; j += par {
					p := &benchPeer{}
					c, err := h.Accept(p, Identity{User: "u" + strconv.Itoa(j%users)}, mustQuery(b, query))
					if err != nil {
						b.Error(err)
						return
					}
					conns[j] = conn{c: c, p: p}
				}
			})
		}
		wg.Wait()
		left := clients
		deadline := time.Now().Add(30 * time.Second)
		for left > 0 {
			if time.Now().After(deadline) {
				b.Fatalf("%d clients not caught up", left)
			}
			progress := false
			for j := range conns {
				c := &conns[j]
				if c.done || !c.p.woken.Swap(false) {
					continue
				}
				progress = true
				for {
					bufs = c.c.Pull(bufs[:0], 1<<16)
					if len(bufs) == 0 {
						break
					}
					if c.c.caughtUp && !c.done {
						c.done = true
						left--
					}
				}
			}
			if !progress {
				time.Sleep(50 * time.Microsecond)
			}
		}
		for j := range conns {
			conns[j].c.Closed()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(s.ranges.Load()-ranges)/float64(b.N), "xrange/storm")
	b.ReportMetric(float64(s.infos.Load()-infos)/float64(b.N), "xinfo/storm")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(clients), "ns/client")
}

// BenchmarkIdleConnections reports the heap an idle connection costs the
// core: 10k cursors (distinct users, 2 groups each, shared by all), live,
// caught up, nothing queued.
func BenchmarkIdleConnections(b *testing.B) {
	const n = 10000
	for i := 0; i < b.N; i++ {
		h, err := NewHub(Config{CursorInterval: time.Hour}, newMemStore())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := h.Warm(context.Background()); err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		cursors := make([]*Cursor, n)
		bufs := make([][]byte, 0, 4)
		for j := range cursors {
			c, err := h.Accept(&benchPeer{}, Identity{User: "user-" + strconv.Itoa(j), Groups: []string{"ops", "noc"}}, ResumeQuery{})
			if err != nil {
				b.Fatal(err)
			}
			bufs = c.Pull(bufs[:0], 1<<16) // caught_up
			cursors[j] = c
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/conn")
		for _, c := range cursors {
			c.Closed()
		}
		h.Close()
	}
}

func mustQuery(tb testing.TB, query url.Values) ResumeQuery {
	q, err := ParseResumeQuery(query, "")
	if err != nil {
		tb.Fatal(err)
	}
	return q
}
