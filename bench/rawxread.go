package bench

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

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
