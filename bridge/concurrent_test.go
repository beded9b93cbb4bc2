package bridge

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrent runs appends, connects, pulls and disconnects at once under
// the race detector; every connection that stays gets every event in order.
func TestConcurrent(t *testing.T) {
	s := newMemStore()
	h := newTestHub(t, Config{WindowBytes: 1 << 20}, s)
	const events = 2000
	evs := make([]*Event, events)
	for i := range evs {
		evs[i] = s.add(t, fmt.Sprintf("user:u%d,group:g%d", i%7, i%3), "", fmt.Sprint(i), 1)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Churn: connections that come and go.
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := accept(t, h, fmt.Sprintf("u%d", i%7), []string{"g1"}, "last_event_id=0-0", "")
			c.pull(t, 4096)
			c.c.Closed()
		}
	})
	readers := make([]*tconn, 8)
	for i := range readers {
		readers[i] = accept(t, h, "u1", []string{"g2"}, "", "")
	}
	for _, r := range readers {
		wg.Go(func() {
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if r.pull(t, 2048) == 0 {
					select {
					case <-r.peer.wakeCh:
					case <-stop:
						r.drain(t)
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		})
	}
	for _, ev := range evs {
		h.Append(ev)
	}
	close(stop)
	wg.Wait()
	var want []string
	for _, ev := range evs {
		if strings.Contains(ev.To, "user:u1,") || strings.HasSuffix(ev.To, "group:g2") {
			want = append(want, ev.ID.String())
		}
	}
	for i, r := range readers {
		if got := r.ids(); !slices.Equal(got, want) {
			t.Fatalf("reader %d: %d events, want %d", i, len(got), len(want))
		}
	}
}

// countingHooks records what the Hub observes.
type countingHooks struct {
	mu                                   sync.Mutex
	appended, evicted, gaps, reads, lags int
	losses                               int
	resumed                              map[ResumeSource]int
	slow                                 map[string]int
	windowEvents                         int
	windowBytes                          int64
}

// TestCloseWhileBackfilling: Close returns while a page read is blocked in
// the Store (it honours the context) and no goroutine is left (goleak in
// TestMain); the waiting connection's Pull returns nothing.
func TestCloseWhileBackfilling(t *testing.T) {
	s := newMemStore()
	for i := range 20 {
		s.add(t, "user:u", "", fmt.Sprint(i), 1)
	}
	h, err := NewHub(Config{WindowBytes: 600, BackfillPage: 2}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.gate = make(chan struct{}) // never opened
	c := accept(t, h, "u", nil, "last_event_id=0-0", "")
	if n := c.pull(t, 1<<20); n != 0 {
		t.Fatalf("pulled %d frames while the page is pending", n)
	}
	waitFor(t, 2*time.Second, "the page read to start", func() bool { return s.ranges.Load() > 0 })
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if n := c.pull(t, 1<<20); n != 0 {
		t.Fatalf("pulled %d frames after Close", n)
	}
	c.c.Closed()
}

// TestConcurrentResumes: resumes from Redis and from the window, appends and
// evictions all at once under the race detector. Every connection that is not
// closed for falling behind gets, in order and once each, every event for it
// after its resume id up to the head it connected at, then caught_up.
func TestConcurrentResumes(t *testing.T) {
	s := newMemStore()
	var histMu sync.Mutex
	var hist []*Event
	for i := range 600 {
		hist = append(hist, s.add(t, fmt.Sprintf("user:u%d,group:g%d", i%4, i%3), "", fmt.Sprint(i), 1))
	}
	h := newTestHub(t, Config{WindowBytes: 16 << 10, BackfillPage: 16, BackfillWorkers: 2}, s)
	stop := make(chan struct{})
	var appender sync.WaitGroup
	appender.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			histMu.Lock()
			ev := s.add(t, fmt.Sprintf("user:u%d,group:g%d", i%4, i%3), "", fmt.Sprint(i), 1)
			hist = append(hist, ev)
			histMu.Unlock()
			h.Append(ev)
			if i%8 == 0 {
				// Slower than replay from the fake Redis: a window of ~80
				// events that moved faster than pages are read would be
				// chased forever (in production ingest is far slower than
				// XRANGE paging, and the window far larger).
				time.Sleep(time.Millisecond)
			}
		}
	})
	errs := make(chan error, 6)
	var resumers sync.WaitGroup
	for w := range 6 {
		resumers.Go(func() {
			if err := resumeLoop(t, h, w, &histMu, &hist); err != nil {
				errs <- err
			}
		})
	}
	resumers.Wait()
	close(stop)
	appender.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d of 150 resumes closed with 1013 while racing the appender", slowCount.Load())
}

var slowCount atomic.Int64

func resumeLoop(t *testing.T, h *Hub, w int, histMu *sync.Mutex, hist *[]*Event) error {
	for k := range 25 {
		histMu.Lock()
		p := (*hist)[(w*97+k*31)%len(*hist)].ID
		histMu.Unlock()
		user := fmt.Sprintf("u%d", (w+k)%4)
		c, err := tryAccept(h, user, []string{"g1"}, "last_event_id="+p.String(), "")
		if err != nil {
			return err
		}
		head := c.c.resume.catchUpAt
		deadline := time.Now().Add(5 * time.Second)
		for len(c.controls("caught_up")) == 0 && c.peer.closeCode() == 0 && time.Now().Before(deadline) {
			if c.pull(t, 4096) == 0 {
				select {
				case <-c.peer.wakeCh:
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		c.c.Closed()
		if c.peer.closeCode() != 0 {
			slowCount.Add(1)
			continue // fell behind while the appender raced it: allowed
		}
		upTo := slices.IndexFunc(c.frames, func(f frame) bool { return f.Control == "caught_up" })
		if upTo < 0 {
			return fmt.Errorf("%s from %s: no caught_up within 5s", user, p)
		}
		var want []string
		histMu.Lock()
		for _, e := range *hist {
			if p.Less(e.ID) && !head.Less(e.ID) && addressedTo(e, user, []string{"g1"}) {
				want = append(want, e.ID.String())
			}
		}
		histMu.Unlock()
		var got []string
		for _, f := range c.frames[:upTo] {
			got = append(got, f.ID)
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s from %s: got %d events before caught_up, want %d", user, p, len(got), len(want))
		}
	}
	return nil
}
