package bench

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

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
