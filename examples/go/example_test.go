// Package examples_test shows Go producers for notifybridge: the publisher
// package, and Watermill's redisstream Publisher for services that already
// use Watermill. The examples run against an in-process miniredis standing in
// for the bridge's Redis, so `go test ./examples/...` checks they stay true.
package examples_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/handlers"
	"github.com/notifybridge/notifybridge/publisher"
)

// bridgeRedis stands in for the Redis a bridge reads; in production this is
// redis.ParseURL(os.Getenv("BRIDGE_REDIS_URL")) or similar.
func bridgeRedis() (*redis.Client, func()) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return rdb, func() { _ = rdb.Close(); mr.Close() }
}

// An OTDR alarm for one user and one group, with the rules of the contract
// checked before anything is written.
func Example_publisher() {
	rdb, done := bridgeRedis()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	p := publisher.New(rdb, "notifications", bridge.DefaultLimits)
	id, err := p.Publish(ctx, "user:42,group:ops", "alarm.fiber_break", `{"fiber":"F-12","km":3.2}`)
	if err != nil {
		fmt.Println("not published:", err)
		return
	}
	fmt.Println("published, id looks like <ms>-<seq>:", len(id) > 2)

	// A mistake is an error here instead of a dead-lettered entry later.
	_, err = p.Publish(ctx, "room:7", "alarm.fiber_break", `{}`)
	fmt.Println("refused as a bad entry:", errors.Is(err, bridge.ErrBadEntry))
	// Output:
	// published, id looks like <ms>-<seq>: true
	// refused as a bad entry: true
}

// Services that already publish with Watermill keep doing so: the recipients
// and the type go in the metadata keys "to" and "type", the payload is the
// event's JSON, and the topic is the bridge's stream.
func Example_watermill() {
	rdb, done := bridgeRedis()
	defer done()

	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: rdb}, watermill.NopLogger{})
	if err != nil {
		panic(err)
	}
	defer pub.Close()

	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"fiber":"F-7","loss_db":4.7}`))
	msg.Metadata.Set("to", "group:ops")
	msg.Metadata.Set("type", "alarm.attenuation")
	if err := pub.Publish("notifications", msg); err != nil {
		fmt.Println("not published:", err)
		return
	}
	fmt.Println("published", msg.UUID != "")
	// Output:
	// published true
}

// The Watermill entry above is what the bridge decodes into an event for
// group:ops: checked with the bridge's own decoder.
func TestWatermillEntryIsAnEvent(t *testing.T) {
	rdb, done := bridgeRedis()
	defer done()
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: rdb}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"fiber":"F-7","loss_db":4.7}`))
	msg.Metadata.Set("to", "group:ops")
	msg.Metadata.Set("type", "alarm.attenuation")
	if err := pub.Publish("notifications", msg); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	entries, err := rdb.XRange(ctx, "notifications", "-", "+").Result()
	if err != nil || len(entries) != 1 {
		t.Fatalf("stream: %v %v", entries, err)
	}
	fields := map[string]string{}
	for k, v := range entries[0].Values {
		fields[k] = fmt.Sprint(v)
	}
	id, err := bridge.ParseID(entries[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := handlers.DecodeEntry(id, fields, bridge.DefaultLimits)
	if err != nil {
		t.Fatalf("the bridge would dead-letter it: %v", err)
	}
	want := `{"id":"` + entries[0].ID + `","type":"alarm.attenuation","data":{"fiber":"F-7","loss_db":4.7}}`
	if got := string(ev.Payload()); got != want {
		t.Fatalf("frame %s, want %s", got, want)
	}
}
