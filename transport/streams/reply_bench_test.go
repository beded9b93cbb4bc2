package streams

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkReadBatch reads the same 256 pending entries (id 0, so nothing
// changes between reads) through go-redis's typed XREADGROUP and through
// the Subscriber's raw read, and reports per entry:
//
//	go test -run '^$' -bench ReadBatch -benchmem ./transport/streams/
func BenchmarkReadBatch(b *testing.B) {
	srv := redistest.Start(b)
	c := srv.Client()
	ctx := context.Background()
	for _, size := range []int{200, 1024} {
		stream := fmt.Sprint("rb", size)
		data := `{"note":"` + strings.Repeat("x", size-11) + `"}`
		for i := range 256 {
			c.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"to", fmt.Sprintf("user:%d,group:ops", i), "type", "alarm.fiber_break", "data", data}})
		}
		c.XGroupCreate(ctx, stream, "g", "0")
		c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}, Count: 256})
		cfg := Config{Stream: stream, Group: "g", Consumer: "c"}
		cfg.setDefaults()
		s := &Subscriber{client: c, cfg: cfg}
		b.Run(fmt.Sprintf("typed/%dB", size), func(b *testing.B) {
			for b.Loop() {
				res, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, "0"}, Count: 256, Block: -1}).Result()
				if err != nil || len(entriesOf(res[0].Messages, nil)) != 256 {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("raw/%dB", size), func(b *testing.B) {
			cons := &consumer{s: s, keys: keyCache{}}
			cons.raw = c
			for b.Loop() {
				msgs, err := cons.read(ctx, "0", false)
				if err != nil || len(msgs) != 256 {
					b.Fatal(len(msgs), err)
				}
			}
		})
	}
}
