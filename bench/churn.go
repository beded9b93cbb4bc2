package bench

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// Churn, for the mixed scenario: clients leave and come back as browsers
// do (a network change, a laptop lid), resuming with last_event_id, and
// must still receive every event once.
const (
	churnTick  = 100 * time.Millisecond // reconnects spread over each second, not one burst
	churnAway  = 500 * time.Millisecond // a client stays away a random time up to this, so resumes have events to replay
	calmWithin = 30 * time.Second       // after calm, how long clients still down are retried
)

// startChurn starts reconnecting spec.Churn percent of the set's clients a
// second, once they are all connected.
func (s *clientSet) startChurn(ctx context.Context) {
	if s.spec.Churn <= 0 || s.churnStop != nil {
		return
	}
	s.churnStop, s.churnDone = make(chan struct{}), make(chan struct{})
	s.churning.Store(true)
	go s.churn(ctx, s.churnStop, s.churnDone)
}

// stopChurn stops the reconnects and returns once every client is
// connected again (or calmWithin has passed).
func (s *clientSet) stopChurn() {
	if s.churnStop == nil {
		return
	}
	close(s.churnStop)
	<-s.churnDone
	s.churnStop = nil
	s.churning.Store(false)
}

// churn takes the clients in turns, one shuffled round after another, so
// each reconnects about as often as the others. A client whose connection
// ended without us (the bridge closed it, or a reconnect failed) is
// reconnected at the next tick, as an SDK would.
func (s *clientSet) churn(ctx context.Context, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	rng := rand.New(rand.NewPCG(uint64(s.spec.First)+1, 11))
	awayUpTo := func(d time.Duration) time.Duration {
		if d <= 0 {
			return 0
		}
		return time.Duration(rng.Int64N(int64(d)))
	}
	order := rng.Perm(len(s.clients))
	next, owed := 0, 0.0
	sem := make(chan struct{}, max(1, s.spec.Dialers))
	var wg sync.WaitGroup
	rejoin := func(c *wsClient, away time.Duration) {
		if c == nil || !c.busy.CompareAndSwap(false, true) {
			return // still reconnecting from its last turn
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.busy.Store(false)
			s.rejoin(ctx, c, away, sem)
		}()
	}
	rejoinDown := func(away time.Duration) (n int) {
		for _, c := range s.clients {
			if c != nil && !c.busy.Load() && c.down() {
				rejoin(c, awayUpTo(away))
				n++
			}
		}
		return n
	}
	tick := time.NewTicker(churnTick)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			wg.Wait()
			deadline := time.Now().Add(calmWithin)
			for rejoinDown(0) > 0 && ctx.Err() == nil && time.Now().Before(deadline) {
				wg.Wait()
				time.Sleep(churnTick)
			}
			wg.Wait()
			return
		case <-tick.C:
		}
		owed += float64(len(s.clients)) * s.spec.Churn / 100 * churnTick.Seconds()
		for ; owed >= 1 && len(order) > 0; owed-- {
			rejoin(s.clients[order[next]], awayUpTo(churnAway))
			next = (next + 1) % len(order)
		}
		rejoinDown(churnAway)
	}
}

// rejoin closes c (unless a failed reconnect left it closed), stays away,
// and reconnects it resuming after the newest id it holds. The caller
// holds c.busy.
func (s *clientSet) rejoin(ctx context.Context, c *wsClient, away time.Duration, sem chan struct{}) {
	if !c.away {
		c.close()
		c.away = true
		s.conn.Add(-1)
	}
	select {
	case <-time.After(away):
	case <-ctx.Done():
		return
	}
	sem <- struct{}{}
	code, err := c.reconnect(ctx, s.url(c.user), s.io)
	<-sem
	if err != nil {
		s.reconnectFails.Add(1)
		return
	}
	c.away = false
	s.conn.Add(1)
	s.reconnects.Add(1)
	if code != 0 {
		s.closesMu.Lock()
		if s.closes == nil {
			s.closes = map[int]int{}
		}
		s.closes[code]++
		s.closesMu.Unlock()
	}
}

// churn turns every fleet's reconnects on or off. Off returns once every
// fleet has stopped and brought its clients back, so the drain after it
// waits for connected clients only.
func (r *runner) churn(ctx context.Context, on bool) error {
	if r.o.Churn <= 0 {
		return nil
	}
	for _, f := range r.fleets {
		f.churn(on)
	}
	if on {
		r.logf("%g%% of clients reconnecting each second", r.o.Churn)
		return nil
	}
	deadline := time.Now().Add(calmWithin + 10*time.Second)
	for {
		st := r.status()
		if st.Err != "" {
			return errors.New(st.Err)
		}
		if !st.Churning {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("clients still reconnecting 40s after the churn stopped")
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// loadRSS reads the bridge's RSS and goroutines off the timeline at the
// start of the load, a minute into it, at its end and at its peak: with
// the same connections and traffic throughout, growth after the first
// minute is what a leak looks like.
func (r *runner) loadRSS() {
	res := r.res
	var start, minute, end *point
	for i := range res.Timeline {
		p := &res.Timeline[i]
		if p.AtS < r.loadStartS || p.RSSBytes == 0 {
			continue
		}
		if start == nil {
			start = p
		}
		if minute == nil && p.AtS >= r.loadStartS+60 {
			minute = p
		}
		end = p
		res.RSSMax = max(res.RSSMax, p.RSSBytes)
	}
	if start == nil {
		return
	}
	res.RSSLoadStart, res.RSSEnd = start.RSSBytes, end.RSSBytes
	res.GoroutinesStart, res.GoroutinesEnd = start.Goroutines, end.Goroutines
	if minute != nil {
		res.RSSAfter1m = minute.RSSBytes
	}
}
