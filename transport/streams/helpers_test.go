package streams

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/internal/testwait"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The Pub/Sub suite's multiplier (pubsub/tests, TestConcurrentSubscribe
		// and TestPublishSubscribeInOrder) forwards each subscriber's messages
		// to one channel and leaves the forwarders blocked once the test has
		// read what it wanted; the subscribers themselves are closed.
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/internal/subscriber.(*multiplier).Subscribe.func2"),
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/internal/subscriber.(*multiplier).Subscribe.func3"),
		// The suite's TestReconnect (TestPubSubReconnect, opt-in) never closes
		// the channel its bookkeeping goroutine ranges over.
		goleak.IgnoreTopFunction("github.com/ThreeDotsLabs/watermill/pubsub/tests.TestReconnect.func2"),
	)
}

// waitFor and ctxT are the shared bounded waits (internal/testwait).
func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	testwait.For(t, timeout, "condition", cond)
}

func ctxT(t testing.TB) context.Context { return testwait.Context(t) }

// addN appends n plain entries and returns their ids.
func addN(t testing.TB, c redis.UniversalClient, stream string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		id, err := c.XAdd(ctxT(t), &redis.XAddArgs{Stream: stream, Values: []any{"to", "*", "data", fmt.Sprint(i)}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

func testConfig(t testing.TB, stream string) Config {
	return Config{
		Stream:          stream,
		Group:           config.GroupPrefix + "test",
		Consumer:        "test",
		Block:           100 * time.Millisecond,
		CloseTimeout:    200 * time.Millisecond,
		RetryBackoffMax: 200 * time.Millisecond,
		Logger:          zaptest.NewLogger(t),
	}
}

func newSub(t testing.TB, c redis.UniversalClient, cfg Config) *Subscriber {
	t.Helper()
	s, err := NewSubscriber(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// recv returns the next message or fails after a deadline.
func recv(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

// received collects ids seen by a handler.
type received struct {
	mu  sync.Mutex
	ids []string
}

func (r *received) add(id string) {
	r.mu.Lock()
	r.ids = append(r.ids, id)
	r.mu.Unlock()
}

func (r *received) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}

// runRouter runs a Watermill router with handler over sub and stops it when
// the test ends.
func runRouter(t testing.TB, sub message.Subscriber, topic string, handler message.NoPublishHandlerFunc) *message.Router {
	t.Helper()
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	r.AddConsumerHandler("test", topic, sub, handler)
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	select {
	case <-r.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("router did not start")
	}
	t.Cleanup(func() {
		_ = r.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("router did not stop")
		}
	})
	return r
}

func pendingCount(t testing.TB, c redis.UniversalClient, stream, group string) int64 {
	t.Helper()
	p, err := c.XPending(ctxT(t), stream, group).Result()
	if err != nil {
		t.Fatal(err)
	}
	return p.Count
}

// countingHooks counts hook calls.
type countingHooks struct {
	read, acked, ackCalls, errs atomic.Int64
}

func (h *countingHooks) EntriesRead(n int) { h.read.Add(int64(n)) }
func (h *countingHooks) AcksFlushed(n int) { h.acked.Add(int64(n)); h.ackCalls.Add(1) }
func (h *countingHooks) RedisError(string, error) {
	h.errs.Add(1)
}
