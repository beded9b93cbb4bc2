package wspool

import (
	"container/heap"
	"math"
	"sync"
	"time"
)

// timers is the one timer heap of the pool: every connection has at most one
// entry, due at its next check (ping, token expiry, write timeout, silence,
// close grace). The loop pops due connections and lets Conn.onTimer decide;
// it never touches a socket, it only sets state bits and reschedules.
//
// Lock order: timers.mu is a leaf; nothing is called with it held.
type timers struct {
	mu   sync.Mutex
	h    timerHeap // guarded by mu
	kick chan struct{}
}

type timerHeap []*Conn

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].tDue < h[j].tDue }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].tIdx = int32(i)
	h[j].tIdx = int32(j)
}
func (h *timerHeap) Push(x any) {
	c := x.(*Conn)
	c.tIdx = int32(len(*h))
	*h = append(*h, c)
}
func (h *timerHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.tIdx = -1
	return c
}

func newTimers() *timers { return &timers{kick: make(chan struct{}, 1)} }

// set schedules c's check at due (unix nanoseconds), keeping an existing
// earlier check: the job and the timer loop may both set one, and a check
// that comes early only recomputes, while one that comes late would delay a
// close.
func (t *timers) set(c *Conn, due int64) {
	t.mu.Lock()
	first := false
	switch {
	case c.tIdx < 0:
		c.tDue = due
		heap.Push(&t.h, c)
		first = c.tIdx == 0
	case c.tDue <= due:
	default:
		c.tDue = due
		heap.Fix(&t.h, int(c.tIdx))
		first = c.tIdx == 0
	}
	t.mu.Unlock()
	if first {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

func (t *timers) remove(c *Conn) {
	t.mu.Lock()
	if c.tIdx >= 0 {
		heap.Remove(&t.h, int(c.tIdx))
	}
	t.mu.Unlock()
}

// run fires due checks until done is closed.
func (t *timers) run(done <-chan struct{}) {
	tm := time.NewTimer(time.Hour)
	defer tm.Stop()
	batch := make([]*Conn, 0, 256)
	for {
		now := time.Now().UnixNano()
		t.mu.Lock()
		for len(t.h) > 0 && t.h[0].tDue <= now && len(batch) < cap(batch) {
			batch = append(batch, heap.Pop(&t.h).(*Conn))
		}
		wait := time.Hour
		if len(t.h) > 0 {
			wait = time.Duration(t.h[0].tDue - now)
		}
		t.mu.Unlock()
		for i, c := range batch {
			c.onTimer(now)
			batch[i] = nil
		}
		if len(batch) == cap(batch) {
			batch = batch[:0]
			continue
		}
		batch = batch[:0]
		tm.Reset(max(wait, 0))
		select {
		case <-done:
			return
		case <-t.kick:
		case <-tm.C:
		}
	}
}

// onTimer runs on the timer loop when c's check is due: it sets the bits of
// whatever is due and schedules the next check.
func (c *Conn) onTimer(now int64) {
	if c.state.Load()&stDead != 0 {
		return
	}
	cfg := &c.s.cfg
	var bits uint32
	next := int64(math.MaxInt64)
	if g := c.graceUntil.Load(); g != 0 {
		if now >= g {
			c.schedule(stGrace)
			return
		}
		c.s.timers.set(c, g)
		return
	}
	if exp := c.expiresAt(); exp != 0 {
		if now >= exp {
			bits |= stExpire
		} else {
			next = min(next, exp)
		}
	}
	if st := c.stallSince.Load(); st != 0 {
		if d := st + int64(cfg.WriteTimeout); now >= d {
			bits |= stSlow
		} else {
			next = min(next, d)
		}
	}
	if d := c.lastRead.Load() + 2*int64(cfg.PingInterval); now >= d {
		bits |= stSilent
	} else {
		next = min(next, d)
	}
	if now >= c.nextPing {
		bits |= stPing
		c.nextPing = now + int64(cfg.PingInterval)
	}
	next = min(next, c.nextPing)
	if bits != 0 {
		c.schedule(bits)
	}
	c.s.timers.set(c, next)
}
