// Package bench is the load generator behind `notifybridge bench`: it opens
// WebSocket clients against a bridge, publishes through Redis at a paced
// rate, and reports throughput, latency, loss, duplicates and the bridge's
// memory and CPU. Lost or duplicated events make the run fail.
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
	"time"

	"github.com/redis/go-redis/v9"
)

// Options describe one run.
type Options struct {
	Scenario string        // idle, broadcast, targeted, resume-storm
	Clients  int           // WebSocket clients
	Rate     int           // events per second; 0 = as fast as possible
	Events   int           // events to publish (0: Rate × Duration)
	Size     int           // bytes of data per event
	Duration time.Duration // publishing time when Events is 0; idle hold time
	Prefill  int           // resume-storm: entries in the stream before the storm
	Missed   int           // resume-storm: events each client missed
	Stream   string

	WSURL    string // ws://host:port/ws; empty starts a bridge child process
	RedisURL string // the bridge's Redis; empty with WSURL empty: embedded
	AdminURL string // http://host:port of admin_listen, for RSS, CPU, goroutines
	Binary   string // the notifybridge binary for the child bridge
	Extra    []string

	Progress io.Writer // plain progress lines; nil for none
	Bar      bool      // draw a progress bar (terminals)
}

// Result is what a run measured.
type Result struct {
	Scenario        string        `json:"scenario"`
	Clients         int           `json:"clients"`
	Published       int           `json:"published"`
	Expected        int64         `json:"expected_deliveries"`
	Delivered       int64         `json:"delivered"`
	Lost            int64         `json:"lost"`
	Duplicated      int64         `json:"duplicated"`
	Closed          int           `json:"clients_closed"`
	Seconds         float64       `json:"seconds"`
	DeliveriesPerS  float64       `json:"deliveries_per_second"`
	PublishedPerS   float64       `json:"published_per_second"`
	P50ms           float64       `json:"p50_ms"`
	P90ms           float64       `json:"p90_ms"`
	P99ms           float64       `json:"p99_ms"`
	MaxMs           float64       `json:"max_ms"`
	RSSBaseBytes    int64         `json:"rss_base_bytes"`
	RSSBytes        int64         `json:"rss_bytes"`
	RSSPerConnBytes float64       `json:"rss_per_connection_bytes"`
	Goroutines      int64         `json:"goroutines"`
	GoroutinesBase  int64         `json:"goroutines_base"`
	CPUSeconds      float64       `json:"bridge_cpu_seconds"`
	CaughtUpSeconds float64       `json:"caught_up_seconds,omitempty"`
	StreamReads     int64         `json:"stream_reads"`
	Samples         []sampleJSON  `json:"-"`
	Histogram       []bucketCount `json:"latency_histogram_ms"`
}

type sampleJSON struct {
	AtS   float64
	LatMs float64
}

type bucketCount struct {
	UpToMs float64 `json:"le_ms"`
	Count  int     `json:"count"`
}

// Failed reports whether the run lost or duplicated events.
func (r *Result) Failed() bool { return r.Lost > 0 || r.Duplicated > 0 }

// Run executes one scenario.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
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
	r := &runner{o: o, rdb: rdb, res: &Result{Scenario: o.Scenario, Clients: o.Clients}}
	switch o.Scenario {
	case "idle":
		err = r.idle(ctx)
	case "broadcast", "targeted":
		err = r.fanout(ctx)
	case "resume-storm":
		err = r.resumeStorm(ctx)
	}
	if err != nil {
		return nil, err
	}
	return r.res, nil
}

func (o *Options) validate() error {
	switch o.Scenario {
	case "idle", "broadcast", "targeted", "resume-storm":
	default:
		return fmt.Errorf("scenario: must be idle, broadcast, targeted or resume-storm, got %q", o.Scenario)
	}
	if o.Clients <= 0 {
		return errors.New("clients: must be > 0")
	}
	if o.Size < 16 {
		o.Size = 16
	}
	if o.Stream == "" {
		o.Stream = "notifications"
	}
	if o.Events == 0 && o.Rate > 0 {
		o.Events = int(float64(o.Rate) * o.Duration.Seconds())
	}
	return nil
}

type runner struct {
	o       Options
	rdb     *redis.Client
	res     *Result
	clients []*wsClient
	sink    latencySink
	start   time.Time
}

func (r *runner) logf(format string, args ...any) {
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, format+"\n", args...)
	}
}

// connect opens n clients, query(i) giving each its parameters, a few hundred
// at a time so the handshake backlog stays bounded.
func (r *runner) connect(ctx context.Context, n int, query func(i int) string) error {
	r.clients = make([]*wsClient, n)
	bar := newProgress(r.o, n, "connecting")
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialClient(ctx, r.o.WSURL+"?"+query(i))
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("client %d: %w", i, err)
				}
				mu.Unlock()
				return
			}
			c.start(r.start, &r.sink)
			r.clients[i] = c
			bar.add(1)
		}(i)
	}
	wg.Wait()
	bar.finish()
	return firstErr
}

func (r *runner) closeAll() {
	for _, c := range r.clients {
		if c != nil {
			c.close()
		}
	}
}

func (r *runner) waitCaughtUp(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for _, c := range r.clients {
			if c.isCaughtUp() {
				n++
			}
		}
		if n == len(r.clients) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d clients caught up within %v", n, len(r.clients), timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *runner) idle(ctx context.Context) error {
	base, err := scrape(r.o.AdminURL)
	if err != nil {
		return err
	}
	r.start = time.Now()
	if err := r.connect(ctx, r.o.Clients, userQuery); err != nil {
		return err
	}
	defer r.closeAll()
	if err := r.waitCaughtUp(60 * time.Second); err != nil {
		return err
	}
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
	if r.o.Clients > 0 {
		r.res.RSSPerConnBytes = float64(after.rss-base.rss) / float64(r.o.Clients)
	}
}

func (r *runner) fanout(ctx context.Context) error {
	base, err := scrape(r.o.AdminURL)
	if err != nil {
		return err
	}
	r.start = time.Now()
	if err := r.connect(ctx, r.o.Clients, userQuery); err != nil {
		return err
	}
	defer r.closeAll()
	if err := r.waitCaughtUp(60 * time.Second); err != nil {
		return err
	}
	expected := make([]int64, len(r.clients))
	pad := strings.Repeat("x", max(0, r.o.Size-len(`{"t":1732451234567890,"p":""}`)))
	rng := rand.New(rand.NewPCG(1, 2))
	bar := newProgress(r.o, r.o.Events, "publishing")
	pubStart := time.Now()
	r.start = pubStart
	err = pace(ctx, r.o.Rate, r.o.Events, func(batch int) error {
		pipe := r.rdb.Pipeline()
		for i := 0; i < batch; i++ {
			to := "*"
			if r.o.Scenario == "targeted" {
				k := rng.IntN(len(r.clients))
				to = "user:u" + strconv.Itoa(k)
				expected[k]++
			}
			data := `{"t":` + strconv.FormatInt(time.Now().UnixMicro(), 10) + `,"p":"` + pad + `"}`
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: r.o.Stream, Values: []any{"to", to, "type", "bench", "data", data}})
		}
		_, err := pipe.Exec(ctx)
		bar.add(batch)
		return err
	})
	bar.finish()
	if err != nil {
		return err
	}
	pubDone := time.Since(pubStart)
	if r.o.Scenario == "broadcast" {
		for i := range expected {
			expected[i] = int64(r.o.Events)
		}
	}
	var total int64
	for _, e := range expected {
		total += e
	}
	// Wait until every client has everything, or nothing moved for 10 s.
	last, lastChange := int64(-1), time.Now()
	for {
		var got int64
		for _, c := range r.clients {
			got += c.received.Load()
		}
		if got >= total {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		}
		if time.Since(lastChange) > 10*time.Second {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(pubStart)
	after, err := scrape(r.o.AdminURL)
	if err == nil {
		r.fillProcess(base, after)
	}
	r.res.Published = r.o.Events
	r.res.Expected = total
	for i, c := range r.clients {
		unique, dups, code := c.stats()
		r.res.Delivered += int64(unique)
		r.res.Duplicated += int64(dups)
		if lost := expected[i] - int64(unique); lost > 0 {
			r.res.Lost += lost
		}
		if code != 0 {
			r.res.Closed++
		}
	}
	r.res.Seconds = elapsed.Seconds()
	r.res.DeliveriesPerS = float64(r.res.Delivered) / elapsed.Seconds()
	r.res.PublishedPerS = float64(r.o.Events) / pubDone.Seconds()
	r.summarizeLatency()
	return nil
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
	missed := max(o.Missed, 1)
	r.logf("prefilling %d entries", o.Prefill)
	pad := strings.Repeat("x", max(0, o.Size-8))
	pipe := r.rdb.Pipeline()
	for i := 0; i < o.Prefill; i++ {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: o.Stream, Values: []any{"to", "group:filler", "type", "fill", "data", `"` + pad + `"`}})
		if i%1000 == 999 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	last, err := r.rdb.XRevRangeN(ctx, o.Stream, "+", "-", 1).Result()
	if err != nil || len(last) == 0 {
		return fmt.Errorf("prefill: %v", err)
	}
	resumeFrom := last[0].ID
	// Each client missed `missed` events of its own after resumeFrom.
	for i := 0; i < o.Clients; i++ {
		for k := 0; k < missed; k++ {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: o.Stream, Values: []any{"to", "user:u" + strconv.Itoa(i), "type", "missed", "data", `{"k":` + strconv.Itoa(k) + `}`}})
		}
		if i%100 == 99 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	// Let the bridge ingest what was appended before the storm starts.
	time.Sleep(2 * time.Second)
	readsBefore := streamReads(ctx, r.rdb)
	base, _ := scrape(o.AdminURL)
	r.start = time.Now()
	if err := r.connect(ctx, o.Clients, func(i int) string { return userQuery(i) + "&last_event_id=" + resumeFrom }); err != nil {
		return err
	}
	defer r.closeAll()
	if err := r.waitCaughtUp(120 * time.Second); err != nil {
		return err
	}
	var lastCaught time.Time
	for _, c := range r.clients {
		c.mu.Lock()
		if c.caughtUp.After(lastCaught) {
			lastCaught = c.caughtUp
		}
		c.mu.Unlock()
	}
	r.res.CaughtUpSeconds = lastCaught.Sub(r.start).Seconds()
	readsAfter := streamReads(ctx, r.rdb)
	if readsBefore >= 0 && readsAfter >= 0 {
		r.res.StreamReads = readsAfter - readsBefore
	} else {
		r.res.StreamReads = -1
	}
	after, err := scrape(o.AdminURL)
	if err == nil {
		r.fillProcess(base, after)
	}
	r.res.Expected = int64(o.Clients * missed)
	for _, c := range r.clients {
		unique, dups, code := c.stats()
		r.res.Delivered += int64(unique)
		r.res.Duplicated += int64(dups)
		if unique < missed {
			r.res.Lost += int64(missed - unique)
		}
		if code != 0 {
			r.res.Closed++
		}
	}
	r.res.Published = o.Prefill + o.Clients*missed
	r.res.Seconds = r.res.CaughtUpSeconds
	return nil
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
	rss, goroutines int64
	cpu             float64
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
		switch name {
		case "process_resident_memory_bytes":
			s.rss = int64(f)
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
	args := append([]string{"serve", "--listen", listen, "--admin-listen", admin, "--log-level", "info"}, o.Extra...)
	if o.RedisURL != "" {
		args = append(args, "--redis-url", o.RedisURL)
	}
	cmd := exec.Command(bin, args...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, wsURL: "ws://" + listen + "/ws", adminURL: "http://" + admin, redisURL: o.RedisURL, done: make(chan struct{})}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			if m := embeddedRe.FindString(sc.Text()); m != "" && !sent {
				found <- m
				sent = true
			}
		}
	}()
	go func() { _ = cmd.Wait(); _ = pw.Close(); close(c.done) }()
	if c.redisURL == "" {
		select {
		case u := <-found:
			c.redisURL = u
		case <-c.done:
			return nil, errors.New("bridge child exited before it started")
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
			return nil, errors.New("bridge child not ready within 60s")
		}
		select {
		case <-c.done:
			return nil, errors.New("bridge child exited before it was ready")
		case <-ctx.Done():
			c.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
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
