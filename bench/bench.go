// Package bench is the load generator behind `notifybridge bench`: it opens
// WebSocket (or SSE, --transport sse) clients against a bridge, publishes
// through Redis at a paced rate, and reports throughput, latency, loss,
// duplicates and the bridge's memory and CPU. Lost or duplicated events make
// the run fail. The mixed scenario is the soak: targeted and broadcast
// events while clients keep reconnecting, with the bridge's RSS followed
// over the whole run. revoke, refresh and publish measure the control plane
// (control.go).
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options describe one run.
type Options struct {
	Scenario  string        // idle, broadcast, targeted, resume-storm, mixed, ingest, revoke, refresh, publish
	Clients   int           // WebSocket clients
	Procs     int           // client processes; 0: as few as MaxClientsPerProcess allows
	Rate      int           // events per second; 0 = as fast as possible
	Events    int           // events to publish (0: Rate × Duration)
	Size      int           // bytes of data per event
	Duration  time.Duration // publishing time when Events is 0; idle hold time
	Prefill   int           // resume-storm: entries in the stream before the storm; ingest: the backlog
	Delivered int           // ingest: older entries the group has read before the backlog
	Retention string        // ingest: the started bridge's retention (default 24h: the trimmer leaves the backlog alone)
	Missed    int           // resume-storm: events each client missed
	Stream    string        // empty: a fresh bench-<run> stream with a started bridge, else notifications
	Dialers   int           // concurrent handshakes per process (0: 256)
	Slow      int           // broadcast/targeted: extra clients that never read (write_timeout, eviction)
	RawXRead  bool          // broadcast/targeted: also measure a plain XREAD BLOCK subscriber, same run
	Transport string        // ws (default), sse or poll: what the clients open, /ws, /events or /poll

	GroupSize     int           // revoke: clients per group (client i is in group i/GroupSize)
	Revokes       int           // revoke: single users revoked one after another
	RevokeGroups  int           // revoke: groups revoked one after another (the last ones)
	JWTSecret     string        // refresh: the bridge's HS256 secret (default: a random one for a started bridge)
	RefreshSpread time.Duration // refresh: the in-band tokens go out evenly over this long (0: at once)
	PublishKey    string        // publish: the bridge's publish_key (default: a random one for a started bridge)
	Concurrency   int           // publish: requests (and XADDs) in flight

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
	Transport       string        `json:"transport"`
	CPUPerDelivery  float64       `json:"bridge_cpu_us_per_delivery,omitempty"`
	controlResult                 // revoke, refresh, publish; every field omitted elsewhere
	LoadAvg         string        `json:"load_average"`
	Started         time.Time     `json:"started"`
	Samples         []sampleJSON  `json:"-"`
	Histogram       []bucketCount `json:"latency_histogram_ms"`
	ingestResult                  // ingest only; every field omitted elsewhere
	Timeline        []point       `json:"timeline"`
	hist            latHist       // merged over every client process
	replayHist      latHist       // the same, for frames replayed on resume
	rawSamples      []sample      // merged reservoirs
	perClient       []int64       // unique events per client, by user index
	closeCounts     map[int]int   // close code → clients the server closed
	closeRecs       []closeRec    // every connection the server ended, from every set
	phaseHist       [phaseCount]latHist
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
	res := &Result{Scenario: o.Scenario, Clients: o.Clients, Started: time.Now().UTC(), LoadAvg: loadAvg(), Transport: o.Transport}
	if o.Scenario == "ingest" {
		if err := ingest(ctx, o, res); err != nil {
			return nil, err
		}
		return res, nil
	}
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
		switch o.Scenario {
		case "refresh":
			o.Extra = append(o.Extra, "--auth", "jwt", "--jwt-secret", o.JWTSecret)
		case "publish":
			o.Extra = append(o.Extra, "--publish-key", o.PublishKey)
		}
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
	ropts.PoolSize = max(16, o.Concurrency+4)
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
			_ = rdb.Del(dctx, o.Stream, o.Stream+":dead", o.Stream+":revoked").Err()
		}()
	}
	res.Procs = max(o.Procs, (o.Clients+MaxClientsPerProcess-1)/MaxClientsPerProcess)
	r := &runner{o: o, rdb: rdb, res: res, t0: time.Now(), run: run}
	if o.Scenario == "refresh" {
		// Every first token expires at the same second (as tokens issued
		// together do), far enough out that none expires during the run.
		r.tokenExp = time.Now().Add(time.Hour).Unix()
		r.refreshExp = time.Now().Add(2 * time.Hour).Unix()
	}
	stop, sampled := make(chan struct{}), make(chan struct{})
	go r.sample(stop, sampled)
	switch o.Scenario {
	case "idle":
		err = r.idle(ctx)
	case "broadcast", "targeted", "mixed":
		err = r.fanout(ctx)
	case "resume-storm":
		err = r.resumeStorm(ctx)
	case "revoke":
		err = r.revoke(ctx)
	case "publish":
		err = r.publish(ctx)
	case "refresh":
		err = r.fanout(ctx)
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
	r.summarizeControl()
	return r.res, nil
}

func (o *Options) validate() error {
	switch o.Scenario {
	case "idle", "broadcast", "targeted", "resume-storm", "mixed", "ingest", "revoke", "refresh", "publish":
	default:
		return fmt.Errorf("scenario: must be idle, broadcast, targeted, resume-storm, mixed, ingest, revoke, refresh or publish, got %q", o.Scenario)
	}
	switch o.Transport {
	case "":
		o.Transport = "ws"
	case "ws", "sse", "poll":
	default:
		return fmt.Errorf("transport: must be ws, sse or poll, got %q", o.Transport)
	}
	if o.Transport == "poll" && (o.Scenario == "mixed" || o.Scenario == "revoke" || o.Slow > 0) {
		return errors.New("transport: poll runs idle, broadcast, targeted and resume-storm (a poll sees no close code, and holds no connection to churn or stall)")
	}
	if o.Transport == "sse" && o.Scenario == "refresh" {
		return errors.New("transport: refresh sends the token in band, over a WebSocket; use --transport ws")
	}
	if err := o.validateControl(); err != nil {
		return err
	}
	if o.Scenario == "ingest" {
		if o.Prefill <= 0 {
			return errors.New("prefill: ingest needs a backlog (> 0 entries)")
		}
		if o.Retention == "" {
			o.Retention = "24h"
		}
		o.Clients = max(o.Clients, 1) // no clients connect; --clients is ignored
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
	if (o.Scenario == "broadcast" || o.Scenario == "targeted" || o.Scenario == "mixed" || o.Scenario == "refresh" || o.Scenario == "publish") && o.Events <= 0 {
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
