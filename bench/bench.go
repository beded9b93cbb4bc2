// Package bench is the load generator behind `notifybridge bench`: it opens
// WebSocket clients against a bridge, publishes through Redis at a paced
// rate, and reports throughput, latency, loss, duplicates and the bridge's
// memory and CPU. Lost or duplicated events make the run fail. The mixed
// scenario is the soak: targeted and broadcast events while clients keep
// reconnecting, with the bridge's RSS followed over the whole run.
package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/redis/go-redis/v9"
)

// Options describe one run.
type Options struct {
	Scenario string        // idle, broadcast, targeted, resume-storm, mixed
	Clients  int           // WebSocket clients
	Procs    int           // client processes; 0: as few as MaxClientsPerProcess allows
	Rate     int           // events per second; 0 = as fast as possible
	Events   int           // events to publish (0: Rate × Duration)
	Size     int           // bytes of data per event
	Duration time.Duration // publishing time when Events is 0; idle hold time
	Prefill  int           // resume-storm: entries in the stream before the storm
	Missed   int           // resume-storm: events each client missed
	Stream   string        // empty: a fresh bench-<run> stream with a started bridge, else notifications
	Dialers  int           // concurrent handshakes per process (0: 256)
	Slow     int           // broadcast/targeted: extra clients that never read (write_timeout, eviction)
	RawXRead bool          // broadcast/targeted: also measure a plain XREAD BLOCK subscriber, same run

	BroadcastShare float64 // mixed: fraction of events (0..1) to everyone; the rest to one random client each
	Churn          float64 // mixed: percent of clients that close and reconnect (resuming) each second

	WSURL    string   // ws://host:port/ws; empty starts a bridge child process
	RedisURL string   // the bridge's Redis; empty with WSURL empty: embedded
	AdminURL string   // http://host:port of admin_listen, for RSS, CPU, goroutines
	Binary   string   // the notifybridge binary for the child bridge and client processes
	Extra    []string // more settings for the started bridge
	Env      []string // more environment for the started bridge (GOMAXPROCS=1, GOMEMLIMIT=…)

	Progress io.Writer // plain progress lines; nil for none
	Bar      bool      // draw a progress bar (terminals)
}

// Result is what a run measured.
type Result struct {
	Scenario        string        `json:"scenario"`
	Clients         int           `json:"clients"`
	Procs           int           `json:"client_processes"`
	Stream          string        `json:"stream"`
	Published       int           `json:"published"`
	Expected        int64         `json:"expected_deliveries"`
	Delivered       int64         `json:"delivered"`
	Lost            int64         `json:"lost"`
	Duplicated      int64         `json:"duplicated"`
	Misdelivered    int64         `json:"misdelivered"`
	Foreign         int64         `json:"foreign_events"` // events of other runs on the same bridge, ignored
	Closed          int           `json:"clients_closed"`
	CloseCodes      map[int]int   `json:"close_codes,omitempty"`
	Seconds         float64       `json:"seconds"`
	DeliveriesPerS  float64       `json:"deliveries_per_second"`
	PublishedPerS   float64       `json:"published_per_second"`
	LatencySamples  int64         `json:"latency_samples"`
	P50ms           float64       `json:"p50_ms"`
	P90ms           float64       `json:"p90_ms"`
	P99ms           float64       `json:"p99_ms"`
	MaxMs           float64       `json:"max_ms"`
	RawP50ms        float64       `json:"raw_xread_p50_ms,omitempty"`
	RawP99ms        float64       `json:"raw_xread_p99_ms,omitempty"`
	RawMaxMs        float64       `json:"raw_xread_max_ms,omitempty"`
	BroadcastShare  float64       `json:"broadcast_share,omitempty"`
	Broadcasts      int           `json:"broadcasts,omitempty"` // mixed: events to everyone, of Published
	ChurnPerS       float64       `json:"churn_percent_per_second,omitempty"`
	Reconnects      int64         `json:"reconnects,omitempty"`
	ReconnectFailed int64         `json:"reconnects_failed,omitempty"`   // dial errors, each tried again
	Replayed        int64         `json:"replayed_deliveries,omitempty"` // frames a resume replayed: not in the live latency above
	ReplayP50ms     float64       `json:"replay_p50_ms,omitempty"`
	ReplayP99ms     float64       `json:"replay_p99_ms,omitempty"`
	ReplayMaxMs     float64       `json:"replay_max_ms,omitempty"`
	RSSLoadStart    int64         `json:"rss_load_start_bytes,omitempty"` // mixed: when publishing began, every client connected
	RSSAfter1m      int64         `json:"rss_after_1m_bytes,omitempty"`
	RSSEnd          int64         `json:"rss_end_bytes,omitempty"`
	RSSMax          int64         `json:"rss_max_bytes,omitempty"`
	GoroutinesStart int64         `json:"goroutines_load_start,omitempty"`
	GoroutinesEnd   int64         `json:"goroutines_end,omitempty"`
	RSSBaseBytes    int64         `json:"rss_base_bytes"`
	RSSBytes        int64         `json:"rss_bytes"`
	RSSPerConnBytes float64       `json:"rss_per_connection_bytes"`
	HeapPerConn     float64       `json:"heap_per_connection_bytes"`
	Goroutines      int64         `json:"goroutines"`
	GoroutinesBase  int64         `json:"goroutines_base"`
	CPUSeconds      float64       `json:"bridge_cpu_seconds"`
	CaughtUpSeconds float64       `json:"caught_up_seconds,omitempty"`
	StreamReads     int64         `json:"stream_reads"` // INFO commandstats: XRANGE+XREVRANGE+XREAD calls during the storm; -1 without
	BackfillReads   int64         `json:"backfill_reads"`
	SlowClients     int           `json:"slow_clients,omitempty"`
	SlowClosed      int64         `json:"slow_closed"` // the bridge's notifybridge_slow_client_closes_total over the run // the bridge's notifybridge_backfill_reads_total over the run
	LoadAvg         string        `json:"load_average"`
	Started         time.Time     `json:"started"`
	Samples         []sampleJSON  `json:"-"`
	Histogram       []bucketCount `json:"latency_histogram_ms"`
	Timeline        []point       `json:"timeline"`
	hist            latHist       // merged over every client process
	replayHist      latHist       // the same, for frames replayed on resume
	rawSamples      []sample      // merged reservoirs
	perClient       []int64       // unique events per client, by user index
	closeCounts     map[int]int   // close code → clients the server closed
}

type sampleJSON struct {
	AtS   float64
	LatMs float64
}

type bucketCount struct {
	UpToMs float64 `json:"le_ms"`
	Count  int     `json:"count"`
}

// Failed reports whether the run lost, duplicated or misdelivered events.
func (r *Result) Failed() bool { return r.Lost > 0 || r.Duplicated > 0 || r.Misdelivered > 0 }

// Run executes one scenario.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	res := &Result{Scenario: o.Scenario, Clients: o.Clients, Started: time.Now().UTC(), LoadAvg: loadAvg()}
	// A started bridge reads a stream of its own under a group of its own,
	// so runs sharing a Redis never see each other's entries and nothing
	// that belongs to someone else is ever trimmed or deleted.
	ownStream := false
	run := runID()
	if o.Stream == "" {
		if o.WSURL == "" {
			o.Stream = "bench-" + run
			ownStream = true
		} else {
			o.Stream = "notifications"
		}
	}
	res.Stream = o.Stream
	if o.WSURL == "" {
		child, err := startChild(ctx, o)
		if err != nil {
			return nil, err
		}
		defer child.stop()
		o.WSURL, o.RedisURL, o.AdminURL = child.wsURL, child.redisURL, child.adminURL
	}
	if o.RedisURL == "" {
		return nil, errors.New("--redis-url is needed with --ws-url (the bridge's Redis, to publish)")
	}
	ropts, err := redis.ParseURL(o.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("redis-url: %w", err)
	}
	ropts.PoolSize = 16
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	if ownStream {
		// Deferred after child.stop's defer, so it runs once the bridge is gone.
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = rdb.Del(dctx, o.Stream, o.Stream+":dead").Err()
		}()
	}
	res.Procs = max(o.Procs, (o.Clients+MaxClientsPerProcess-1)/MaxClientsPerProcess)
	r := &runner{o: o, rdb: rdb, res: res, t0: time.Now(), run: run}
	stop, sampled := make(chan struct{}), make(chan struct{})
	go r.sample(stop, sampled)
	switch o.Scenario {
	case "idle":
		err = r.idle(ctx)
	case "broadcast", "targeted", "mixed":
		err = r.fanout(ctx)
	case "resume-storm":
		err = r.resumeStorm(ctx)
	}
	close(stop)
	<-sampled
	if o.Scenario == "mixed" {
		r.loadRSS()
	}
	r.closeAll()
	if err != nil {
		return nil, err
	}
	return r.res, nil
}

func (o *Options) validate() error {
	switch o.Scenario {
	case "idle", "broadcast", "targeted", "resume-storm", "mixed":
	default:
		return fmt.Errorf("scenario: must be idle, broadcast, targeted, resume-storm or mixed, got %q", o.Scenario)
	}
	if o.Clients <= 0 {
		return errors.New("clients: must be > 0")
	}
	if o.Procs < 0 {
		return errors.New("procs: must be >= 0")
	}
	if o.Procs > o.Clients {
		o.Procs = o.Clients
	}
	if o.Size < 64 {
		o.Size = 64 // room for the timing fields
	}
	if o.Dialers <= 0 {
		o.Dialers = 256
	}
	if o.Events == 0 && o.Rate > 0 {
		o.Events = int(float64(o.Rate) * o.Duration.Seconds())
	}
	if (o.Scenario == "broadcast" || o.Scenario == "targeted" || o.Scenario == "mixed") && o.Events <= 0 {
		return errors.New("events: nothing to publish (set --events, or --rate and --duration)")
	}
	if o.Scenario == "resume-storm" && o.Missed <= 0 {
		return errors.New("missed: must be > 0")
	}
	if o.BroadcastShare < 0 || o.BroadcastShare > 1 {
		return errors.New("broadcast-share: must be between 0 and 1")
	}
	if o.Churn < 0 || o.Churn > 100 {
		return errors.New("churn: must be between 0 and 100 (percent of clients a second)")
	}
	if o.Scenario != "mixed" {
		o.BroadcastShare, o.Churn = 0, 0 // mixed only: the flags' defaults must not reach other scenarios
	}
	return nil
}

func runID() string {
	return strconv.FormatInt(time.Now().Unix(), 36) + "-" + strconv.FormatUint(rand.Uint64()&0xffffff, 36)
}

// loadAvg is /proc/loadavg's three averages: numbers from a shared machine
// mean little without it.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

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
	caughtUpOrigin int64     // resume-storm: unix µs the storm began
	t0             time.Time // the timeline's zero: the run's start
}

func (r *runner) addFleet(f fleet) {
	r.fleetsMu.Lock()
	r.fleets = append(r.fleets, f)
	r.fleetsMu.Unlock()
}

// point is one timeline sample: the clients' progress and the bridge's
// process metrics, four times a second, for the plots.
type point struct {
	AtS        float64 `json:"t"`
	Connected  int     `json:"connected"`
	CaughtUp   int     `json:"caught_up"`
	Received   int64   `json:"received"`
	Reconnects int64   `json:"reconnects,omitempty"` // cumulative
	RSSBytes   int64   `json:"rss_bytes,omitempty"`
	Goroutines int64   `json:"goroutines,omitempty"`
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	SlowClosed int64   `json:"slow_closed,omitempty"` // cumulative, since the bridge started
}

// sample records the timeline until stop is closed.
func (r *runner) sample(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := false
	for {
		st := r.status()
		p := point{AtS: time.Since(r.t0).Seconds(), Connected: st.Connected, CaughtUp: st.CaughtUp, Received: st.Received, Reconnects: st.Reconnects}
		if m, err := scrape(r.o.AdminURL); err == nil {
			p.RSSBytes, p.Goroutines, p.CPUSeconds, p.SlowClosed = m.rss, m.goroutines, m.cpu, m.slowCloses
		}
		r.res.Timeline = append(r.res.Timeline, p)
		if last {
			return
		}
		select {
		case <-stop:
			last = true // one more point: the state the run ended in
		case <-tick.C:
		}
	}
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
		spec := setSpec{WSURL: r.o.WSURL, First: first, Count: min(per, n-first), Resume: resume, Dialers: r.o.Dialers, Run: r.run, Churn: r.o.Churn}
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
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
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
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
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
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (r *runner) idle(ctx context.Context) error {
	base, err := scrape(r.o.AdminURL)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := r.connect(ctx, ""); err != nil {
		return err
	}
	if err := r.waitCaughtUp(ctx, 120*time.Second); err != nil {
		return err
	}
	r.res.Seconds = time.Since(start).Seconds()
	hold := r.o.Duration
	if hold <= 0 {
		hold = 5 * time.Second
	}
	r.logf("holding %d idle connections for %v", r.o.Clients, hold)
	select {
	case <-time.After(hold):
	case <-ctx.Done():
		return ctx.Err()
	}
	after, err := scrape(r.o.AdminURL)
	if err != nil {
		return err
	}
	r.fillProcess(base, after)
	return nil
}

func (r *runner) fillProcess(base, after metricsSnapshot) {
	r.res.RSSBaseBytes, r.res.RSSBytes = base.rss, after.rss
	r.res.GoroutinesBase, r.res.Goroutines = base.goroutines, after.goroutines
	r.res.CPUSeconds = after.cpu - base.cpu
	r.res.BackfillReads = after.backfillReads - base.backfillReads
	r.res.SlowClosed = after.slowCloses - base.slowCloses
	if r.o.Clients > 0 {
		r.res.RSSPerConnBytes = float64(after.rss-base.rss) / float64(r.o.Clients)
		r.res.HeapPerConn = float64(after.heap-base.heap) / float64(r.o.Clients)
	}
}

func (r *runner) fanout(ctx context.Context) error {
	base, err := scrape(r.o.AdminURL)
	if err != nil {
		return err
	}
	if err := r.connect(ctx, ""); err != nil {
		return err
	}
	if err := r.waitCaughtUp(ctx, 120*time.Second); err != nil {
		return err
	}
	if err := r.connectSlow(ctx); err != nil {
		return err
	}
	r.perUser = make([]int64, r.o.Clients)
	var raw *rawReader
	if r.o.RawXRead {
		rctx, stopRaw := context.WithCancel(ctx)
		raw = startRawReader(rctx, r.rdb, r.o.Stream)
		defer func() {
			stopRaw()
			<-raw.done
			r.res.RawP50ms, r.res.RawP99ms, r.res.RawMaxMs = raw.hist.quantile(.50), raw.hist.quantile(.99), raw.hist.quantile(1)
		}()
		time.Sleep(100 * time.Millisecond) // let its first XREAD … $ block before publishing
	}
	// Data carries the publish time (unix µs) and, for targeted events, the
	// one user it is for, so clients measure latency and catch misdelivery.
	// Mixed draws each event's kind: a broadcast with BroadcastShare, else
	// targeted.
	tag := `,` + string(runTag(r.run))
	pad := strings.Repeat("x", max(0, r.o.Size-len(`{"t":1732451234567890,"u":12345,"p":""}`)-len(tag)))
	rng := rand.New(rand.NewPCG(1, 2))
	bar := newProgress(r.o, r.o.Events, "publishing")
	pubStart := time.Now()
	r.loadStartS = pubStart.Sub(r.t0).Seconds()
	if r.o.Scenario == "mixed" {
		r.res.BroadcastShare, r.res.ChurnPerS = r.o.BroadcastShare, r.o.Churn
		if err := r.churn(ctx, true); err != nil {
			return err
		}
	}
	err = pace(ctx, r.o.Rate, r.o.Events, func(batch int) error {
		pipe := r.rdb.Pipeline()
		for i := 0; i < batch; i++ {
			to, u := "*", ""
			if r.o.Scenario == "targeted" || (r.o.Scenario == "mixed" && rng.Float64() >= r.o.BroadcastShare) {
				k := rng.IntN(r.o.Clients)
				to, u = "user:"+userName(r.run, k), `,"u":`+strconv.Itoa(k)
				r.perUser[k]++
			} else {
				r.broadcasts++
			}
			data := `{"t":` + strconv.FormatInt(time.Now().UnixMicro(), 10) + u + tag + `,"p":"` + pad + `"}`
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: r.o.Stream, Values: []any{"to", to, "type", "bench", "data", data}})
		}
		_, err := pipe.Exec(ctx)
		bar.add(batch)
		return err
	})
	bar.finish()
	pubDone := time.Since(pubStart)
	if cerr := r.churn(ctx, false); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	r.res.Published = r.o.Events
	if r.o.Scenario == "mixed" {
		r.res.Broadcasts = int(r.broadcasts)
	}
	var total int64
	for i := range r.o.Clients {
		total += r.expected(i)
	}
	// Wait until every client has everything, or nothing moved for 10 s.
	last, lastChange := int64(-1), time.Now()
	for {
		got := r.status().Received
		if got >= total {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		}
		if time.Since(lastChange) > 10*time.Second {
			r.logf("delivery stalled at %d of %d", got, total)
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	elapsed := time.Since(pubStart)
	if after, err := scrape(r.o.AdminURL); err == nil {
		r.fillProcess(base, after)
	}
	r.res.Seconds = elapsed.Seconds()
	r.res.PublishedPerS = float64(r.o.Events) / pubDone.Seconds()
	return nil
}

// expected is how many events of the run client i must receive.
func (r *runner) expected(i int) int64 {
	switch r.o.Scenario {
	case "broadcast":
		return int64(r.res.Published)
	case "targeted":
		if r.perUser == nil {
			return 0
		}
		return r.perUser[i]
	case "mixed":
		// Every client was connected and caught up before the first event,
		// so every broadcast is for it; a reconnect resumes, it never
		// starts afresh.
		if r.perUser == nil {
			return 0
		}
		return r.perUser[i] + r.broadcasts
	case "resume-storm":
		if !r.stormed {
			return 0
		}
		return int64(r.o.Missed)
	}
	return 0
}

// pace calls publish with batches so that n events go out at rate per second
// (as fast as possible when rate is 0), ticking every millisecond.
func pace(ctx context.Context, rate, n int, publish func(batch int) error) error {
	start := time.Now()
	sent := 0
	for sent < n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		due := n
		if rate > 0 {
			due = min(n, int(time.Since(start).Seconds()*float64(rate))+1)
		}
		batch := min(due-sent, 200)
		if batch <= 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		if err := publish(batch); err != nil {
			return err
		}
		sent += batch
	}
	return nil
}

func (r *runner) resumeStorm(ctx context.Context) error {
	o := r.o
	// The stream: a marker entry the clients resume from, then Prefill
	// filler entries (for a group no client is in) with each client's
	// Missed events spread evenly among them, the way a busy stream looks
	// to clients that were away. Every resume spans the whole prefill, so
	// it is served from the replay window only when the window holds it all.
	pad := strings.Repeat("x", max(0, o.Size-8))
	filler := []any{"to", "group:filler", "type", "fill", "data", `"` + pad + `"`}
	resumeFrom, err := r.rdb.XAdd(ctx, &redis.XAddArgs{Stream: o.Stream, Values: filler}).Result()
	if err != nil {
		return fmt.Errorf("prefill: %w", err)
	}
	missedTotal := o.Clients * o.Missed
	total := o.Prefill + missedTotal
	bar := newProgress(o, total, "prefilling")
	pipe := r.rdb.Pipeline()
	m := 0 // missed events written: event m is for client m%Clients
	for i := 0; i < total; i++ {
		// Missed event m goes where m/missedTotal of the stream has been written.
		if m < missedTotal && (o.Prefill == 0 || int64(m)*int64(total) <= int64(i)*int64(missedTotal)) {
			u := m % o.Clients
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: o.Stream, Values: []any{"to", "user:" + userName(r.run, u), "type", "missed",
				"data", `{"k":` + strconv.Itoa(m/o.Clients) + `,"u":` + strconv.Itoa(u) + `,` + string(runTag(r.run)) + `}`}})
			m++
		} else {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: o.Stream, Values: filler})
		}
		if i%1000 == 999 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			bar.add(1000)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	bar.finish()
	if m != missedTotal {
		return fmt.Errorf("prefill wrote %d of %d missed events", m, missedTotal)
	}
	r.stormed = true
	r.res.Published = 1 + total
	// The storm starts once the bridge holds everything (acknowledged means
	// in the replay window), so it measures resume, not ingest.
	if err := waitIngested(ctx, r.rdb, o.Stream, 120*time.Second); err != nil {
		r.logf("%v; starting the storm anyway", err)
	}
	readsBefore := streamReads(ctx, r.rdb)
	base, _ := scrape(o.AdminURL)
	start := time.Now()
	r.caughtUpOrigin = start.UnixMicro()
	if err := r.connect(ctx, resumeFrom); err != nil {
		return err
	}
	if err := r.waitCaughtUp(ctx, 300*time.Second); err != nil {
		return err
	}
	// Every client is caught up: wait for the deliveries still in flight
	// (caught_up follows the missed events on each connection, so this is
	// short), then read the Redis counters.
	want := int64(o.Clients * o.Missed)
	deadline := time.Now().Add(10 * time.Second)
	for r.status().Received < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	readsAfter := streamReads(ctx, r.rdb)
	if readsBefore >= 0 && readsAfter >= 0 {
		r.res.StreamReads = readsAfter - readsBefore
	} else {
		r.res.StreamReads = -1
	}
	if after, err := scrape(o.AdminURL); err == nil {
		r.fillProcess(base, after)
	}
	r.res.Seconds = time.Since(start).Seconds()
	return nil
}

// waitIngested waits until every notifybridge consumer group on the stream
// has read and acknowledged up to its newest entry.
func waitIngested(ctx context.Context, rdb *redis.Client, stream string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		last, err := rdb.XRevRangeN(ctx, stream, "+", "-", 1).Result()
		if err != nil || len(last) == 0 {
			return fmt.Errorf("stream %s: %v", stream, err)
		}
		groups, err := rdb.XInfoGroups(ctx, stream).Result()
		if err != nil {
			return fmt.Errorf("XINFO GROUPS: %w", err)
		}
		done, ours := true, 0
		for _, g := range groups {
			if !strings.HasPrefix(g.Name, "notifybridge-") {
				continue
			}
			ours++
			if g.LastDeliveredID != last[0].ID || g.Pending > 0 {
				done = false
			}
		}
		if done && ours > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bridge did not ingest %s within %v", last[0].ID, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// streamReads sums XRANGE, XREVRANGE and XREAD calls from INFO commandstats;
// -1 when the server does not report them (the embedded Redis).
func streamReads(ctx context.Context, rdb *redis.Client) int64 {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil || !strings.Contains(info, "cmdstat_") {
		return -1
	}
	var total int64
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range []string{"cmdstat_xrange:", "cmdstat_xrevrange:", "cmdstat_xread:"} {
			if strings.HasPrefix(line, cmd) {
				if m := callsRe.FindStringSubmatch(line); m != nil {
					n, _ := strconv.ParseInt(m[1], 10, 64)
					total += n
				}
			}
		}
	}
	return total
}

var callsRe = regexp.MustCompile(`calls=(\d+)`)

// metricsSnapshot is what bench reads from the bridge's /metrics.
type metricsSnapshot struct {
	rss, heap, goroutines, backfillReads, slowCloses int64
	cpu                                              float64
}

func scrape(adminURL string) (metricsSnapshot, error) {
	var s metricsSnapshot
	if adminURL == "" {
		return s, nil
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(adminURL + "/metrics")
	if err != nil {
		return s, fmt.Errorf("scrape %s/metrics: %w", adminURL, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		if strings.HasPrefix(name, "notifybridge_slow_client_closes_total{") {
			s.slowCloses += int64(f) // summed over causes
		}
		switch name {
		case "process_resident_memory_bytes":
			s.rss = int64(f)
		case "go_memstats_heap_inuse_bytes":
			s.heap = int64(f)
		case "notifybridge_backfill_reads_total":
			s.backfillReads = int64(f)
		case "go_goroutines":
			s.goroutines = int64(f)
		case "process_cpu_seconds_total":
			s.cpu = f
		}
	}
	return s, sc.Err()
}

// child is a bridge started by bench with the embedded Redis.
type child struct {
	cmd                       *exec.Cmd
	wsURL, redisURL, adminURL string
	done                      chan struct{}
	log                       *tailBuffer // the child's last log lines, for errors
}

func startChild(ctx context.Context, o Options) (*child, error) {
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	bin := o.Binary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	// The child's node id is the run's own too: its consumer group never
	// meets another run's or a production node's on a shared Redis.
	args := []string{"serve", "--listen", listen, "--admin-listen", admin, "--log-level", "info",
		"--stream", o.Stream, "--node-id", "bench-" + runID()}
	if o.RedisURL != "" {
		args = append(args, "--redis-url", o.RedisURL)
		if !hasFlag(o.Extra, "auth", "jwt-secret", "jwt-public-key-file") {
			args = append(args, "--auth", "none") // bench clients name themselves with ?user=
		}
	}
	args = append(args, o.Extra...) // last, so they win
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), o.Env...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, wsURL: "ws://" + listen + "/ws", adminURL: "http://" + admin, redisURL: o.RedisURL,
		done: make(chan struct{}), log: &tailBuffer{}}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			_, _ = c.log.Write(append(sc.Bytes(), '\n'))
			if m := embeddedRe.FindString(sc.Text()); m != "" && !sent {
				found <- m
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pr) // never block the child on a full pipe
	}()
	go func() { _ = cmd.Wait(); _ = pw.Close(); close(c.done) }()
	if c.redisURL == "" {
		select {
		case u := <-found:
			c.redisURL = u
		case <-c.done:
			return nil, fmt.Errorf("bridge child exited before it started:\n%s", c.log)
		case <-time.After(30 * time.Second):
			c.stop()
			return nil, errors.New("bridge child did not log its embedded redis address within 30s")
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(c.adminURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, fmt.Errorf("bridge child not ready within 60s:\n%s", c.log)
		}
		select {
		case <-c.done:
			return nil, fmt.Errorf("bridge child exited before it was ready:\n%s", c.log)
		case <-ctx.Done():
			c.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func hasFlag(args []string, names ...string) bool {
	for _, a := range args {
		for _, n := range names {
			if a == "--"+n || strings.HasPrefix(a, "--"+n+"=") || a == "-"+n || strings.HasPrefix(a, "-"+n+"=") {
				return true
			}
		}
	}
	return false
}

var embeddedRe = regexp.MustCompile(`redis://127\.0\.0\.1:\d+`)

func (c *child) stop() {
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
