package publisher_test

import (
	"context"
	"errors"
	"fmt"
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
