package publisher

import (
	"context"
	"errors"
	"testing"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

func TestCursor(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	p := New(srv.Client(), "s", bridge.DefaultLimits)
	if got, err := p.Cursor(ctx); err != nil || got != "0-0" {
		t.Fatalf("Cursor of a missing stream = %q, %v; want 0-0", got, err)
	}
	id, err := p.Publish(ctx, "user:1", "", "1")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Cursor(ctx); err != nil || got != id {
		t.Fatalf("Cursor = %q, %v; want %s", got, err, id)
	}
}

func TestDisconnect(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	rdb := srv.Client()
	p := New(rdb, "s", bridge.DefaultLimits)
	cases := []struct {
		name, to, reason string
		bad              bool
	}{
		{"user and group", "user:1,group:ops", "logged out", false},
		{"broadcast", "*", "", false},
		{"bad to", "friend:1", "", true},
		{"two lines", "user:1", "a\nb", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n0, _ := rdb.XLen(ctx, "s").Result()
			id, err := p.Disconnect(ctx, tc.to, tc.reason)
			n1, _ := rdb.XLen(ctx, "s").Result()
			if tc.bad {
				if !errors.Is(err, bridge.ErrBadEntry) || n1 != n0 {
					t.Fatalf("got %q, %v and %d new entries; want a bad-entry error and none", id, err, n1-n0)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := rdb.XRange(ctx, "s", id, id).Result()
			if err != nil || len(msgs) != 1 || msgs[0].Values["control"] != "disconnect" || msgs[0].Values["to"] != tc.to {
				t.Fatalf("entry %v, %v", msgs, err)
			}
		})
	}
	held, err := rdb.HGetAll(ctx, RevokedKey("s")).Result()
	if err != nil || len(held) != 3 || held["user:1"] == "" || held["group:ops"] == "" || held["*"] == "" {
		t.Fatalf("revocations held %v, %v", held, err)
	}
}
