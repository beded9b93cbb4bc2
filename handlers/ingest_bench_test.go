package handlers

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
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
// NB_BENCH_ENTRIES overrides the 200000 entries per stream.
func TestIngestThroughput(t *testing.T) {
	if os.Getenv("NB_BENCH") != "1" {
		t.Skip("set NB_BENCH=1 to run the ingest benchmark")
	}
	n := 200000
	if v := os.Getenv("NB_BENCH_ENTRIES"); v != "" {
		fmt.Sscan(v, &n)
	}
	srv := redistest.Start(t)
	c := srv.Client()
	for _, size := range []int{200, 1024} {
		raw := runFilled(t, c, n, size, "raw", rawLoop)
		noop := runFilled(t, c, n, size, "router", routerLoop(false))
		full := runFilled(t, c, n, size, "ingest", routerLoop(true))
		t.Logf("data %4d B, %d entries: raw XREADGROUP+XACK %7.0f/s | Subscriber+Router no-op handler %7.0f/s (%.0f%%) | full ingest (decode, policy, no-op appender) %7.0f/s (%.0f%%)",
			size, n, raw, noop, 100*noop/raw, full, 100*full/raw)
	}
}

// runFilled fills a fresh stream with n contract entries whose data is about
// size bytes, runs loop over it and returns entries per second.
func runFilled(t *testing.T, c *redis.Client, n, size int, name string, loop func(t *testing.T, c *redis.Client, stream string, n int) time.Duration) float64 {
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
	elapsed := loop(t, c, stream, n)
	if p, err := c.XPending(ctx, stream, "g").Result(); err != nil || p.Count != 0 {
		t.Fatalf("%s: pending after run: %v %v", name, p, err)
	}
	c.Del(ctx, stream)
	return float64(n) / elapsed.Seconds()
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

// routerLoop runs streams.Subscriber under a Watermill Router until every
// entry is acked: with a no-op handler, or (full) with NewRouter's whole
// ingest path and NopAppender.
func routerLoop(full bool) func(t *testing.T, c *redis.Client, stream string, n int) time.Duration {
	return func(t *testing.T, c *redis.Client, stream string, n int) time.Duration {
		hooks := &doneHooks{target: int64(n), done: make(chan struct{})}
		sub, err := streams.NewSubscriber(c, streams.Config{Stream: stream, Group: "g", Consumer: "c", Hooks: hooks})
		if err != nil {
			t.Fatal(err)
		}
		var r *message.Router
		if full {
			dl, _ := streams.NewDeadLetter(c, stream, 1000)
			r, err = NewRouter(sub, IngestConfig{Stream: stream, Limits: bridge.DefaultLimits, DeadLetter: dl})
		} else {
			r, err = message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
			if err == nil {
				r.AddConsumerHandler("noop", stream, sub, func(*message.Message) error { return nil })
			}
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
