package streams

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// BenchmarkDeliver measures the Subscriber's own cost per message, without
// Redis: building the message, handing it over and waiting for its Ack, as
// deliverLoop does for every entry (the per-message context included).
//
//	go test -run '^$' -bench Deliver -benchmem -count 6 ./transport/streams/
func BenchmarkDeliver(b *testing.B) {
	cfg := Config{Stream: "s", Group: "g", Consumer: "c"}
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
	xm := redis.XMessage{ID: "1700000000000-0", Values: map[string]any{
		"to": "user:1,group:ops", "type": "alarm.fiber_break", "data": `{"fiber":"F-12"}`}}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if !c.deliver(ctx, detached, &xm) {
			b.Fatal("deliver cut short")
		}
		if i%256 == 255 { // nothing flushes the acker here
			c.acks.mu.Lock()
			c.acks.ids = c.acks.ids[:0]
			c.acks.mu.Unlock()
		}
	}
	close(c.out)
	<-done
}
