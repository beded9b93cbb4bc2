package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/notifybridge/notifybridge/config"
	"github.com/redis/go-redis/v9"
)

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

// producer returns pace's publish for the fanout scenarios, counting what
// it sends to whom for the loss check.
func (r *runner) producer(ctx context.Context, bar *progress) func(batch int) error {
	// Data carries the publish time (unix µs) and, for targeted events, the
	// one user it is for, so clients measure latency and catch misdelivery.
	// Mixed draws each event's kind: a broadcast with BroadcastShare, else
	// targeted.
	tag := `,` + string(runTag(r.run))
	pad := strings.Repeat("x", max(0, r.o.Size-len(`{"t":1732451234567890,"u":12345,"p":""}`)-len(tag)))
	rng := rand.New(rand.NewPCG(1, 2))
	return func(batch int) error {
		pipe := r.rdb.Pipeline()
		for i := 0; i < batch; i++ {
			to, u := "*", ""
			if r.o.Scenario == "targeted" || r.o.Scenario == "refresh" || (r.o.Scenario == "mixed" && rng.Float64() >= r.o.BroadcastShare) {
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
	}
}

// prefill writes resume-storm's stream and returns the marker's id, where
// every client resumes from.
func (r *runner) prefill(ctx context.Context) (string, error) {
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
		return "", fmt.Errorf("prefill: %w", err)
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
				return "", err
			}
			bar.add(1000)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", err
	}
	bar.finish()
	if m != missedTotal {
		return "", fmt.Errorf("prefill wrote %d of %d missed events", m, missedTotal)
	}
	return resumeFrom, nil
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
			if !strings.HasPrefix(g.Name, config.GroupPrefix) {
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
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
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

// rawReader is the yardstick for delivery latency: one plain
// `XREAD BLOCK` subscriber on the same stream, in the same run, measuring
// publish → receipt exactly as the WebSocket clients do. Whatever the bridge
// adds on top of Redis itself shows as the difference.
type rawReader struct {
	hist latHist
	done chan struct{}
}

func startRawReader(ctx context.Context, rdb *redis.Client, stream string) *rawReader {
	r := &rawReader{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		last := "$"
		for ctx.Err() == nil {
			res, err := rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{stream, last}, Count: 1000, Block: 200 * time.Millisecond}).Result()
			now := time.Now().UnixMicro()
			if err != nil {
				continue // redis.Nil on timeout; a cancelled ctx ends the loop
			}
			for _, s := range res {
				for _, m := range s.Messages {
					last = m.ID
					if data, ok := m.Values["data"].(string); ok {
						if t, ok := publishTime(data); ok {
							r.hist.add(now - t)
						}
					}
				}
			}
		}
	}()
	return r
}

// publishTime reads the leading {"t":<unix µs> of a bench event's data.
func publishTime(data string) (int64, bool) {
	rest, ok := strings.CutPrefix(data, `{"t":`)
	if !ok {
		return 0, false
	}
	return leadingInt([]byte(rest))
}
