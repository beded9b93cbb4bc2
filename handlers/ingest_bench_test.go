package handlers

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/notifybridge/notifybridge/transport/streams"
	"github.com/redis/go-redis/v9"
)

// TestIngestThroughput measures ingest against the raw loop it must keep up
// with, in one run on one redis-server (docs/benchmarks-ingest.md):
//
//	NB_BENCH=1 go test -run TestIngestThroughput -v -timeout 20m ./handlers/
//
// NB_BENCH_ENTRIES overrides the 200000 entries per stream, NB_BENCH_SIZES
// the data sizes ("200,1024") and NB_BENCH_ROWS the loops run
// ("raw,router,ingest,hub"; profile one with -cpuprofile), NB_BENCH_RUNS
// repeats the whole sequence, NB_BENCH_BATCH and NB_BENCH_ACK_BATCH set the
// Subscriber's BatchSize and AckBatch (default 256 each), and
// NB_BENCH_PER_ENTRY=1 makes it send a message per entry instead of one per
// read batch (streams.Config.Batched, as the node runs).
func TestIngestThroughput(t *testing.T) {
	if os.Getenv("NB_BENCH") != "1" {
		t.Skip("set NB_BENCH=1 to run the ingest benchmark")
	}
	n := 200000
	if v := os.Getenv("NB_BENCH_ENTRIES"); v != "" {
		fmt.Sscan(v, &n)
	}
	sizes := []int{200, 1024}
	if v := os.Getenv("NB_BENCH_SIZES"); v != "" {
		sizes = sizes[:0]
		for _, f := range strings.Split(v, ",") {
			var size int
			fmt.Sscan(f, &size)
			sizes = append(sizes, size)
		}
	}
	rows := []benchRow{
		{"raw", "raw XREADGROUP+XACK", rawLoop},
		{"router", "Subscriber+Router no-op handler", routerLoop(modeNoop)},
		{"ingest", "full ingest, NopAppender", routerLoop(modeNop)},
		{"hub", "full ingest, bridge.Hub 64 MiB window", routerLoop(modeHub)},
	}
	if v := os.Getenv("NB_BENCH_ROWS"); v != "" {
		rows = slices.DeleteFunc(rows, func(r benchRow) bool { return !slices.Contains(strings.Split(v, ","), r.name) })
	}
	runs := 1
	if v := os.Getenv("NB_BENCH_RUNS"); v != "" {
		fmt.Sscan(v, &runs)
	}
	srv := redistest.Start(t)
	c := srv.Client()
	for run := 1; run <= runs; run++ {
		t.Logf("run %d of %d", run, runs)
		benchRun(t, c, n, sizes, rows)
	}
}

func benchRun(t *testing.T, c *redis.Client, n int, sizes []int, rows []benchRow) {
	for _, size := range sizes {
		var raw float64
		for _, r := range rows {
			res := runFilled(t, c, n, size, r.name, r.loop)
			if r.name == "raw" {
				raw = res.rate
			}
			pct := ""
			if raw > 0 && r.name != "raw" {
				pct = fmt.Sprintf(" (%3.0f%% of raw)", 100*res.rate/raw)
			}
			t.Logf("data %4d B, %d entries: %-38s %7.0f/s%s | CPU/entry: Go %5.2f µs, redis-server %5.2f µs | GCs %d, allocs/entry %.1f, B/entry %.0f",
				size, n, r.desc, res.rate, pct, res.goCPU, res.redisCPU, res.gcs, res.allocs, res.bytes)
		}
	}
}

type benchRow struct {
	name, desc string
	loop       func(t *testing.T, c *redis.Client, stream string, n int) time.Duration
}

type benchResult struct {
	rate     float64 // entries per second
	goCPU    float64 // µs of this process's CPU (user+sys) per entry
	redisCPU float64 // µs of redis-server CPU per entry
	gcs      uint32  // GC cycles during the loop
	allocs   float64 // heap allocations per entry (whole process)
	bytes    float64 // heap bytes allocated per entry (whole process)
}

// runFilled fills a fresh stream with n contract entries whose data is about
// size bytes, runs loop over it and returns entries per second and the CPU
// both sides spent per entry (less noisy than the rate on a shared machine).
func runFilled(t *testing.T, c *redis.Client, n, size int, name string, loop func(t *testing.T, c *redis.Client, stream string, n int) time.Duration) benchResult {
	t.Helper()
	ctx := context.Background()
	stream := fmt.Sprintf("bench-%s-%d", name, size)
	data := `{"fiber":"F-12","km":3.2,"note":"` + strings.Repeat("x", max(size-34, 0)) + `"}`
	for done := 0; done < n; {
		pipe := c.Pipeline()
		for i := 0; i < 1000 && done < n; i, done = i+1, done+1 {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{
				"to", fmt.Sprintf("user:%d,group:ops", done%5000), "type", "alarm.fiber_break", "data", data}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.XGroupCreate(ctx, stream, "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0, rcpu0 := processCPU(t), redisCPU(t, c)
	elapsed := loop(t, c, stream, n)
	cpu1, rcpu1 := processCPU(t), redisCPU(t, c)
	runtime.ReadMemStats(&ms1)
	if p, err := c.XPending(ctx, stream, "g").Result(); err != nil || p.Count != 0 {
		t.Fatalf("%s: pending after run: %v %v", name, p, err)
	}
	c.Del(ctx, stream)
	return benchResult{
		rate:     float64(n) / elapsed.Seconds(),
		goCPU:    float64((cpu1 - cpu0).Microseconds()) / float64(n),
		redisCPU: (rcpu1 - rcpu0) * 1e6 / float64(n),
		gcs:      ms1.NumGC - ms0.NumGC,
		allocs:   float64(ms1.Mallocs-ms0.Mallocs) / float64(n),
		bytes:    float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(n),
	}
}

// processCPU is the user+system CPU time this process used so far.
func processCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisCPU is the user+system CPU seconds redis-server used so far.
func redisCPU(t *testing.T, c *redis.Client) float64 {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			sum += f
		}
	}
	return sum
}

// rawLoop is the floor: XREADGROUP COUNT 256, then one XACK for the batch.
func rawLoop(t *testing.T, c *redis.Client, stream string, n int) time.Duration {
	ctx := context.Background()
	start := time.Now()
	ids := make([]string, 0, 256)
	for got := 0; got < n; {
		res, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}, Count: 256, Block: time.Second}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = ids[:0]
		for _, m := range res[0].Messages {
			ids = append(ids, m.ID)
		}
		if err := c.XAck(ctx, stream, "g", ids...).Err(); err != nil {
			t.Fatal(err)
		}
		got += len(ids)
	}
	return time.Since(start)
}

type doneHooks struct {
	streams.NopHooks
	acked  atomic.Int64
	target int64
	done   chan struct{}
}

func (h *doneHooks) AcksFlushed(n int) {
	if h.acked.Add(int64(n)) == h.target {
		close(h.done)
	}
}

type loopMode int

const (
	modeNoop loopMode = iota // Subscriber and Router, handler does nothing
	modeNop                  // NewRouter's whole ingest path, NopAppender
	modeHub                  // NewRouter's whole ingest path into a real bridge.Hub
)

// routerLoop runs streams.Subscriber under a Watermill Router until every
// entry is acked: with a no-op handler, or NewRouter's whole ingest path
// with NopAppender or with the real window (bridge.Hub, 64 MiB, the
// default), which keeps a live heap as in production.
func routerLoop(mode loopMode) func(t *testing.T, c *redis.Client, stream string, n int) time.Duration {
	return func(t *testing.T, c *redis.Client, stream string, n int) time.Duration {
		hooks := &doneHooks{target: int64(n), done: make(chan struct{})}
		cfg := streams.Config{Stream: stream, Group: "g", Consumer: "c", Hooks: hooks, Batched: os.Getenv("NB_BENCH_PER_ENTRY") != "1"}
		if v := os.Getenv("NB_BENCH_BATCH"); v != "" {
			fmt.Sscan(v, &cfg.BatchSize)
		}
		if v := os.Getenv("NB_BENCH_ACK_BATCH"); v != "" {
			fmt.Sscan(v, &cfg.AckBatch)
		}
		sub, err := streams.NewSubscriber(c, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var app Appender = NopAppender{}
		if mode == modeHub {
			hub, err := bridge.NewHub(bridge.Config{WindowBytes: 64 << 20},
				NewStore(streams.NewReader(c, stream), bridge.DefaultLimits))
			if err != nil {
				t.Fatal(err)
			}
			defer hub.Close()
			app = &countingAppender{hub: hub}
			defer func() {
				if a := app.(*countingAppender); a.fresh != int64(n) {
					t.Errorf("hub took %d of %d events as new", a.fresh, n)
				}
			}()
		}
		var r *message.Router
		if mode == modeNoop {
			r, err = message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
			if err == nil {
				r.AddConsumerHandler("noop", stream, sub, func(*message.Message) error { return nil })
			}
		} else {
			dl, _ := streams.NewDeadLetter(c, stream, 1000)
			r, err = NewRouter(sub, IngestConfig{Stream: stream, Limits: bridge.DefaultLimits, DeadLetter: dl, Appender: app})
		}
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		runErr := make(chan error, 1)
		go func() { runErr <- r.Run(context.Background()) }()
		select {
		case <-hooks.done:
		case <-time.After(5 * time.Minute):
			t.Fatalf("only %d of %d acked", hooks.acked.Load(), n)
		}
		elapsed := time.Since(start)
		_ = r.Close()
		_ = sub.Close()
		<-runErr
		if dead, _ := c.XLen(context.Background(), stream+":dead").Result(); dead != 0 {
			t.Fatalf("%d entries dead-lettered", dead)
		}
		return elapsed
	}
}

// countingAppender counts what the Hub took as new (it is called from one
// handler at a time).
type countingAppender struct {
	hub   *bridge.Hub
	fresh int64
}

func (a *countingAppender) Append(ev *bridge.Event) bool {
	ok := a.hub.Append(ev)
	if ok {
		a.fresh++
	}
	return ok
}
