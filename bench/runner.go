package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/redis/go-redis/v9"
)

type runner struct {
	run            string     // run id: stream, user names, event tags
	slow           []net.Conn // clients that never read
	fleetsMu       sync.Mutex // fleets is read by the timeline sampler
	o              Options
	rdb            *redis.Client
	res            *Result
	fleets         []fleet
	closed         bool
	perUser        []int64   // targeted, mixed: events published to each user
	broadcasts     int64     // mixed: events published to everyone
	loadStartS     float64   // mixed: when publishing began, on the timeline
	stormed        bool      // resume-storm: the missed events are in the stream
	start          string    // ingest: where the groups start (0, or the last --delivered entry)
	caughtUpOrigin int64     // resume-storm: unix µs the storm began
	tokenExp       int64     // refresh: every client's first exp (unix s), the same for all
	refreshExp     int64     // refresh: the exp of the tokens sent in band
	revokedAt      []int64   // revoke: unix µs the first revoke naming client i was appended; 0: none
	revokedKind    []byte    // revoke: 'u' (as a user) or 'g' (by its group)
	t0             time.Time // the timeline's zero: the run's start
}

func (r *runner) addFleet(f fleet) {
	r.fleetsMu.Lock()
	r.fleets = append(r.fleets, f)
	r.fleetsMu.Unlock()
}

func (r *runner) logf(format string, args ...any) {
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, format+"\n", args...)
	}
}

// connect opens the run's clients (users u0 … u<N-1>) across res.Procs
// sets: in this process when one is enough, else in bench-client children
// of at most MaxClientsPerProcess each.
func (r *runner) connect(ctx context.Context, resume string) error {
	n, procs := r.o.Clients, r.res.Procs
	per := (n + procs - 1) / procs
	for first := 0; first < n; first += per {
		spec := setSpec{WSURL: r.o.WSURL, First: first, Count: min(per, n-first), Resume: resume, Dialers: r.o.Dialers, Run: r.run, Churn: r.o.Churn,
			Transport: r.o.Transport, GroupSize: r.o.GroupSize}
		if r.o.Scenario == "refresh" {
			spec.JWTSecret, spec.TokenExp, spec.RefreshExp, spec.RefreshSpread = r.o.JWTSecret, r.tokenExp, r.refreshExp, r.o.RefreshSpread
		}
		if procs == 1 {
			r.addFleet(startLocal(ctx, spec))
			continue
		}
		bin, err := binaryPath(r.o)
		if err != nil {
			return err
		}
		f, err := startRemote(bin, spec)
		if err != nil {
			return err
		}
		r.addFleet(f)
	}
	if procs > 1 {
		r.logf("clients spread over %d processes of at most %d", procs, per)
	}
	bar := newProgress(r.o, n, "connecting")
	defer bar.finish()
	shown := 0
	for {
		st := r.status()
		bar.add(st.Connected - shown)
		shown = st.Connected
		if st.Err != "" {
			return errors.New(st.Err)
		}
		if st.ConnectDone {
			return nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// status sums every fleet's progress; ConnectDone once all are done.
func (r *runner) status() setStatus {
	sum := setStatus{ConnectDone: true}
	r.fleetsMu.Lock()
	fleets := r.fleets
	r.fleetsMu.Unlock()
	for _, f := range fleets {
		st := f.status()
		sum.Connected += st.Connected
		sum.CaughtUp += st.CaughtUp
		sum.Received += st.Received
		sum.Reconnects += st.Reconnects
		sum.Acks += st.Acks
		sum.BadAcks += st.BadAcks
		sum.Closed += st.Closed
		sum.Churning = sum.Churning || st.Churning
		sum.ConnectDone = sum.ConnectDone && st.ConnectDone
		if sum.Err == "" {
			sum.Err = st.Err
		}
	}
	return sum
}

// connectSlow opens the --slow clients, users u<Clients>…: they complete
// the handshake and then never read, with a 4 KiB receive buffer set before
// connecting (so the window they advertise stays small), as a stalled phone
// would. The bridge must close them (write_timeout or eviction) while the
// reading clients lose nothing. They are outside the lost/duplicated count.
func (r *runner) connectSlow(ctx context.Context) error {
	if r.o.Slow <= 0 {
		return nil
	}
	r.res.SlowClients = r.o.Slow
	d := ws.Dialer{Timeout: 30 * time.Second, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = setRcvBuf(fd, 4096)
			})
			return errors.Join(err, serr)
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	for i := range r.o.Slow {
		conn, _, _, err := d.Dial(ctx, r.o.WSURL+"?user="+userName(r.run, r.o.Clients+i))
		if err != nil {
			return fmt.Errorf("slow client %d: %w", i, err)
		}
		r.slow = append(r.slow, conn)
	}
	r.logf("%d slow clients connected (never reading)", r.o.Slow)
	return nil
}

// closeAll ends every client and merges what the fleets measured into res.
func (r *runner) closeAll() {
	if r.closed {
		return
	}
	r.closed = true
	for _, c := range r.slow {
		_ = c.Close()
	}
	res := r.res
	res.perClient = make([]int64, r.o.Clients)
	res.closeCounts = map[int]int{}
	for _, f := range r.fleets {
		st, err := f.finish()
		if err != nil {
			r.logf("%v", err)
			continue
		}
		copy(res.perClient[st.First:], st.Unique)
		res.Duplicated += st.Duplicated
		res.Misdelivered += st.Misdelivered
		res.Foreign += st.Foreign
		for code, k := range st.ServerClosed {
			res.closeCounts[code] += k
			res.Closed += k
		}
		res.hist.merge(&st.Hist)
		res.replayHist.merge(&st.Replay)
		res.Reconnects += st.Reconnects
		res.ReconnectFailed += st.ReconnectFails
		res.rawSamples = append(res.rawSamples, st.Samples...)
		res.closeRecs = append(res.closeRecs, st.Closes...)
		for i := range min(len(st.Phases), phaseCount) {
			res.phaseHist[i].merge(&st.Phases[i])
		}
		if st.LastCaughtUpUS > 0 && r.caughtUpOrigin > 0 {
			res.CaughtUpSeconds = max(res.CaughtUpSeconds, float64(st.LastCaughtUpUS-r.caughtUpOrigin)/1e6)
		}
	}
	if len(res.closeCounts) > 0 {
		res.CloseCodes = res.closeCounts
	}
	for _, u := range res.perClient {
		res.Delivered += u
	}
	if res.Seconds > 0 {
		res.DeliveriesPerS = float64(res.Delivered) / res.Seconds
	}
	if res.Delivered > 0 && res.CPUSeconds > 0 {
		res.CPUPerDelivery = 1e6 * res.CPUSeconds / float64(res.Delivered)
	}
	for i, u := range res.perClient {
		if e := r.expected(i); e > u {
			res.Lost += e - u
		}
	}
	res.Expected = 0
	for i := range res.perClient {
		res.Expected += r.expected(i)
	}
	r.summarizeLatency()
}

func (r *runner) waitCaughtUp(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st := r.status()
		if st.CaughtUp == r.o.Clients {
			return nil
		}
		if st.Err != "" {
			return errors.New(st.Err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d clients caught up within %v", st.CaughtUp, r.o.Clients, timeout)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// connectCaughtUp opens the run's clients and waits until each has caught up.
func (r *runner) connectCaughtUp(ctx context.Context, resume string, timeout time.Duration) error {
	if err := r.connect(ctx, resume); err != nil {
		return err
	}
	return r.waitCaughtUp(ctx, timeout)
}

// sleep waits d, or returns ctx's error once it is done.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
