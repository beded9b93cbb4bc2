package streams

import (
	"context"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// BenchmarkDeliver measures the Subscriber's own cost per entry, without
// Redis: building the message, handing it over and waiting for its Ack, as
// deliverLoop does (the per-message context included), one message per entry
// and one per read batch (Config.Batched). ns/op and allocs/op are per entry.
//
//	go test -run '^$' -bench Deliver -benchmem -count 6 ./transport/streams/
func BenchmarkDeliver(b *testing.B) {
	entry := redis.XMessage{ID: "1700000000000-0", Values: map[string]any{
		"to": "user:1,group:ops", "type": "alarm.fiber_break", "data": `{"fiber":"F-12"}`}}
	for _, size := range []int{1, 256} {
		batch := make([]redis.XMessage, size)
		for i := range batch {
			batch[i] = entry
			batch[i].ID = fmt.Sprintf("1700000000000-%d", i)
		}
		b.Run(fmt.Sprintf("batched=%v/batch=%d", size > 1, size), func(b *testing.B) {
			cfg := Config{Stream: "s", Group: "g", Consumer: "c", Batched: size > 1}
			cfg.setDefaults()
			s := &Subscriber{cfg: cfg}
			c := &consumer{s: s, out: make(chan *message.Message), acks: newAcker(nil, &s.cfg), log: zap.NewNop()}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			detached := context.WithoutCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for m := range c.out {
					m.Ack()
				}
			}()
			b.ReportAllocs()
			for i := 0; i < b.N; i += size {
				ok := true
				if cfg.Batched {
					ok = c.deliverBatch(ctx, detached, batch)
				} else {
					ok = c.deliverEntry(ctx, detached, &batch[0])
				}
				if !ok {
					b.Fatal("deliver cut short")
				}
				c.acks.mu.Lock() // nothing flushes the acker here
				c.acks.ids = c.acks.ids[:0]
				c.acks.mu.Unlock()
			}
			close(c.out)
			<-done
		})
	}
}
