package publisher_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/notifybridge/notifybridge/publisher"
	"github.com/redis/go-redis/v9"
)

func TestPublishRoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := publisher.New(c, "notifications", bridge.DefaultLimits)
	id, err := p.Publish(ctx, "user:42,group:ops", "alarm.fiber_break", `{"fiber":"F-12","km":3.2}`)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := publisher.Publish(ctx, p, "*", "", []byte(`true`))
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := c.XRange(ctx, "notifications", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].ID != id || msgs[1].ID != id2 {
		t.Fatalf("stream holds %v", msgs)
	}
	if v := msgs[0].Values; v["to"] != "user:42,group:ops" || v["type"] != "alarm.fiber_break" || v["data"] != `{"fiber":"F-12","km":3.2}` {
		t.Errorf("first entry %v", v)
	}
	if v := msgs[1].Values; len(v) != 2 || v["data"] != "true" {
		t.Errorf("second entry %v (no type field expected)", v)
	}
}

func TestPublishRefusesBadEvents(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := publisher.New(c, "notifications", bridge.Limits{MaxEventBytes: 8, MaxRecipients: 2})
	for _, tc := range []struct{ to, typ, data string }{
		{"user:1 ", "", "1"},
		{"user:1,user:2,user:3", "", "1"},
		{"*", "a b", "1"},
		{"*", "", "{"},
		{"*", "", `"123456789"`},
		{"*", "", " 1"},
	} {
		if _, err := p.Publish(ctx, tc.to, tc.typ, tc.data); !errors.Is(err, bridge.ErrBadEntry) {
			t.Errorf("Publish(%q, %q, %q) = %v, want a bad-entry error", tc.to, tc.typ, tc.data, err)
		}
	}
	if n, err := c.Exists(ctx, "notifications").Result(); err != nil || n != 0 {
		t.Fatalf("something was written: %d %v", n, err)
	}
}

func TestPublishMaxLen(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := publisher.New(c, "s", bridge.DefaultLimits)
	p.MaxLen = 10
	for i := 0; i < 500; i++ {
		if _, err := p.Publish(ctx, "*", "", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	// MAXLEN ~ trims whole radix nodes (100 entries by default), so "about".
	if n, _ := c.XLen(ctx, "s").Result(); n >= 500 || n < 10 {
		t.Fatalf("length %d after MAXLEN ~ 10", n)
	}
}

// Publishing one event from Go; run against a bridge's Redis.
func Example() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close()
	p := publisher.New(client, "notifications", bridge.DefaultLimits)
	id, err := p.Publish(context.Background(), "user:42,group:ops", "alarm.fiber_break", `{"fiber":"F-12","km":3.2}`)
	if err != nil {
		fmt.Println("not published:", err)
		return
	}
	fmt.Println("published", id)
}

// TestPublishWaitReplicas: with WaitReplicas the append returns once a real
// replica holds the entry; with the replica's link cut it returns the id and
// a NotReplicatedError after WaitTimeout.
func TestPublishWaitReplicas(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.Start(t, redistest.Options{Extra: []string{"--replicaof", "127.0.0.1", fmt.Sprint(primary.Port)}})
	pc, rc := primary.Client(), replica.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		info, err := pc.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("replica never came online: %v\n%s", err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p := publisher.New(pc, "notifications", bridge.DefaultLimits)
	p.WaitReplicas, p.WaitTimeout = 1, 2*time.Second
	id, err := p.Publish(ctx, "user:1", "", `1`)
	if err != nil {
		t.Fatal(err)
	}
	if msgs, err := rc.XRange(ctx, "notifications", id, id).Result(); err != nil || len(msgs) != 1 {
		t.Fatalf("replica after WAIT holds %v (%v)", msgs, err)
	}

	// Cut the link: the replica stops following.
	if err := rc.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	p.WaitTimeout = 200 * time.Millisecond
	id, err = p.Publish(ctx, "user:1", "", `2`)
	var nr *publisher.NotReplicatedError
	if !errors.As(err, &nr) || nr.ID != id || id == "" || nr.Replicas != 0 {
		t.Fatalf("Publish without a replica: id %q, err %v; want a NotReplicatedError naming the id", id, err)
	}
}
