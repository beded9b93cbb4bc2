package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestStreamGap: SSE and poll report trimmed history with the same gap frame
// as /ws, before the replay of what is left.
func TestStreamGap(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	var ids []string
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("1700000000000-%d", i)
		if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "notifications", ID: id,
			Values: []any{"to", "user:u", "data", fmt.Sprint(i)}}).Err(); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rdb.XTrimMinID(context.Background(), "notifications", ids[5]).Err(); err != nil {
		t.Fatal(err)
	}
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})
	gap := `{"control":"gap","requested":"` + ids[1] + `","oldest":"` + ids[5] + `"}`

	s := dialSSE(t, n.Listen, "user=u", "Last-Event-ID", ids[1])
	s.waitEvents(ids[5:])
	if m := s.messages(); m[0].data != gap || m[0].id != "" {
		t.Fatalf("first SSE message %+v, want %s without id", m[0], gap)
	}
	if cu := s.waitControl("caught_up"); cu.id != ids[9] {
		t.Fatalf("caught_up id %q", cu.id)
	}

	p := doPoll(t, n.Listen, "user=u&last_event_id="+ids[1])
	if string(p.Frames[0]) != gap || strings.Join(p.events(), ",") != strings.Join(ids[5:], ",") || p.Last != ids[9] {
		t.Fatalf("poll after a gap: %s", p.body)
	}
}

// TestWebSocketHeartbeat: heartbeat=1 adds {"control":"ping"} every
// ping_interval; without it nothing changes.
func TestWebSocketHeartbeat(t *testing.T) {
	rs := redistest.Start(t)
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--ping-interval", "1s"}})
	hb := e2e.Dial(t, n.Listen, "user=u&heartbeat=1", nil)
	plain := e2e.Dial(t, n.Listen, "user=u", nil)
	hb.WaitControl("ping", 5*time.Second)
	hb.WaitControl("ping", 5*time.Second)
	for _, f := range plain.Snapshot() {
		if f.Control == "ping" {
			t.Fatalf("heartbeat frame without heartbeat=1: %s", f.Raw)
		}
	}
}
