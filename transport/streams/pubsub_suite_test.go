package streams_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/notifybridge/notifybridge/transport/streams"
)

// suiteFeatures is what streams.Subscriber promises, as the suite's flags
// name it (read what each flag makes the suite test in pubsub/tests).
func suiteFeatures() tests.Features {
	return tests.Features{
		// Each group gets every entry. A constructor without a group makes a
		// new group, like a new node: ConsumerGroups is the fan-out between
		// nodes, not competing consumers in one group (one consumer per group).
		ConsumerGroups: true,
		// At least once: an entry handled but not yet XACKed comes again
		// after a restart; the suite deduplicates by UUID.
		ExactlyOnceDelivery: false,
		// One message in flight, in stream order; the next only after the
		// Ack. This makes TestNoAck and TestPublishSubscribeInOrder run, the
		// latter with 10 subscribers (GuaranteedOrderWithSingleSubscriber
		// false asks for more than a single subscriber would).
		GuaranteedOrder: true,
		// Entries live in the stream and the group's position in Redis: a new
		// instance in the same group goes on where the last one stopped.
		Persistent: true,
		// The groups start at 0-0 (StartID below), so a new group reads the
		// stream from its first entry.
		NewSubscriberReceivesOldMessages: true,
		// TestReconnect needs a broker restart command, which this run leaves
		// empty so the suite skips it (and says so): it runs on its own server
		// in TestPubSubReconnect.
		RestartServiceCommand: nil,
		// CI runs without -short; the long form publishes 10 000 messages
		// through 50 subscribers and would take minutes under -race.
		ForceShort: true,
		// Messages are XADDed: no publisher context travels with them.
		ContextPreserved: false,
	}
}

// TestPubSub runs Watermill's universal Pub/Sub suite against
// streams.Subscriber on a redis-server of its own.
func TestPubSub(t *testing.T) {
	srv := redistest.Start(t)
	pubSub, withGroup := suiteConstructors(srv.Addr())
	tests.TestPubSub(t, suiteFeatures(), pubSub, withGroup)
}

// TestPubSubReconnect runs the suite's TestReconnect: 10 000 messages from
// 100 publishers while redis-server is killed and started again twice (AOF
// with fsync always, so no acknowledged XADD is lost). The suite runs a
// command to restart the broker; here that command (curl) asks this test to
// restart the server it owns. It is opt-in (NB_PUBSUB_RECONNECT=1) because
// the suite test records the published messages in a goroutine and compares
// them without waiting for it: it can report one "extra" message when nothing
// is wrong, and -race reports that access as a data race in the suite's code.
func TestPubSubReconnect(t *testing.T) {
	if os.Getenv("NB_PUBSUB_RECONNECT") != "1" {
		t.Skip("set NB_PUBSUB_RECONNECT=1 to run the suite's TestReconnect (its bookkeeping races; see the comment)")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not found: the suite's restart command needs it")
	}
	srv := redistest.Start(t, redistest.Options{AppendOnly: true, FsyncAlways: true})
	var (
		mu       sync.Mutex // serializes restarts, guards restarts
		restarts int
	)
	restarter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		srv.Restart()
		restarts++
	}))
	defer restarter.Close()
	f := suiteFeatures()
	f.RestartServiceCommand = []string{curl, "-fsS", "--max-time", "30", restarter.URL}
	pubSub, _ := suiteConstructors(srv.Addr())
	tests.TestReconnect(t, tests.TestContext{TestID: tests.NewTestID(), Features: f}, pubSub)
	mu.Lock()
	defer mu.Unlock()
	if restarts != 2 {
		t.Errorf("redis-server restarted %d times, want 2", restarts)
	}
}

// suiteConstructors returns the suite's two constructors: a publisher and a
// subscriber of a new group, and the same for a given group.
func suiteConstructors(addr string) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	withGroup := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		pub := &suitePublisher{client: redis.NewClient(&redis.Options{Addr: addr})}
		sub := &suiteSubscriber{t: t, client: redis.NewClient(&redis.Options{Addr: addr}), group: group,
			running: map[string]bool{}}
		// The suite closes what it makes, but not on every failure path.
		t.Cleanup(func() { _ = pub.Close(); _ = sub.Close() })
		return pub, sub
	}
	return func(t *testing.T) (message.Publisher, message.Subscriber) {
		return withGroup(t, "suite-"+watermill.NewShortUUID())
	}, withGroup
}

// suitePublisher XADDs each Watermill message to the stream named by the
// topic with the stock redisstream marshaller's fields (uuid, payload,
// msgpack metadata), which suiteSubscriber maps back.
type suitePublisher struct {
	client *redis.Client
	once   sync.Once
}

func (p *suitePublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		values, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal(topic, msg)
		if err != nil {
			return err
		}
		if err := p.client.XAdd(context.Background(), &redis.XAddArgs{Stream: topic, Values: values}).Err(); err != nil {
			return err
		}
	}
	return nil
}

// Close may be called more than once (the suite does).
func (p *suitePublisher) Close() error {
	p.once.Do(func() { _ = p.client.Close() })
	return nil
}

// suiteSubscriber is the thin adapter the suite needs around
// streams.Subscriber, which reads one stream: one Subscriber per Subscribe
// call, on the topic's stream, in the adapter's group with a fixed consumer
// name. A topic can be subscribed again once its last subscription ended
// (TestSubscribeCtx does): that is a new Subscriber in the same group and
// consumer, like a node restarting, so what it left pending comes again.
// Each delivered message is rewritten in place to the published message
// (UUID, payload, metadata); its Ack, Nack and Context stay the Subscriber's.
type suiteSubscriber struct {
	t      *testing.T
	client *redis.Client
	group  string

	mu      sync.Mutex // guards subs, running, closed
	subs    []*streams.Subscriber
	running map[string]bool // topic -> a subscription is live
	closed  bool

	wg   sync.WaitGroup // forwarding goroutines
	once sync.Once
}

func (s *suiteSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("suite subscriber: closed")
	}
	if s.running[topic] {
		return nil, fmt.Errorf("suite subscriber: topic %q is already subscribed", topic)
	}
	sub, err := streams.NewSubscriber(s.client, streams.Config{
		Stream:   topic,
		Group:    s.group,
		Consumer: "suite",
		StartID:  func(context.Context) (string, error) { return "0-0", nil },
		// Short waits keep the suite's many Closes quick: Close waits for a
		// blocked read (Block) and for a message the suite never settles
		// (CloseTimeout).
		Block:        100 * time.Millisecond,
		CloseTimeout: 200 * time.Millisecond,
		Logger:       zaptest.NewLogger(s.t),
	})
	if err != nil {
		return nil, err
	}
	in, err := sub.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	s.subs = append(s.subs, sub)
	s.running[topic] = true
	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		for msg := range in {
			if err := toPublished(msg); err != nil {
				s.t.Errorf("entry %s: %v", msg.UUID, err)
				msg.Nack()
				continue
			}
			select {
			case out <- msg:
			case <-msg.Context().Done(): // closed while nobody reads: it stays pending
			}
		}
		s.mu.Lock()
		delete(s.running, topic)
		s.mu.Unlock()
	}()
	return out, nil
}

// toPublished turns a delivered message (the entry's fields as metadata)
// back into the message the publisher XADDed.
func toPublished(msg *message.Message) error {
	values := map[string]any{}
	for _, k := range []string{redisstream.UUIDHeaderKey, "payload", "metadata"} {
		if v, ok := msg.Metadata[k]; ok {
			values[k] = v
		}
	}
	published, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(values)
	if err != nil {
		return err
	}
	msg.UUID, msg.Payload, msg.Metadata = published.UUID, published.Payload, published.Metadata
	return nil
}

// Close closes every Subscriber it made and waits for its goroutines; it may
// be called more than once.
func (s *suiteSubscriber) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		subs := s.subs
		s.mu.Unlock()
		for _, sub := range subs {
			_ = sub.Close()
		}
		s.wg.Wait()
		_ = s.client.Close()
	})
	return nil
}
