package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestSSE: /events delivers what /ws delivers, byte for byte, with the
// fields an EventSource needs, and resumes by each parameter and by the
// Last-Event-ID header.
func TestSSE(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--ping-interval", "1s"}})

	wsc := e2e.Dial(t, n.Listen, "user=alice&groups=ops", nil)
	alice := dialSSE(t, n.Listen, "user=alice&groups=ops")
	bob := dialSSE(t, n.Listen, "user=bob")
	for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := alice.header.Get(k); alice.status != 200 || got != v {
			t.Fatalf("status %d, %s = %q, want %q", alice.status, k, got, v)
		}
	}
	if alice.header.Get("Content-Length") != "" {
		t.Fatalf("SSE response has a Content-Length")
	}
	wsc.WaitControl("caught_up", 5*time.Second)
	cu := alice.waitControl("caught_up")
	if cu.id == "" || !strings.Contains(cu.data, `"last":"`+cu.id+`"`) {
		t.Fatalf("caught_up without its id: %+v", cu)
	}
	bob.waitControl("caught_up")

	a1 := xadd(t, rdb, "notifications", "to", "user:alice", "type", "alarm.x", "data", `{"n":1}`)
	b1 := xadd(t, rdb, "notifications", "to", "user:bob", "data", `"b"`)
	g1 := xadd(t, rdb, "notifications", "to", "group:ops", "type", "info", "data", `[1,"ü"]`)
	all := xadd(t, rdb, "notifications", "to", "*", "data", `null`)
	alice.waitEvents([]string{a1, g1, all})
	bob.waitEvents([]string{b1, all})
	wsc.WaitEvents([]string{a1, g1, all}, 5*time.Second)
	// Byte-exact: the data line is the /ws frame.
	var wsRaw []string
	for _, f := range wsc.Snapshot() {
		if strings.HasPrefix(f.Raw, `{"id":"`) {
			wsRaw = append(wsRaw, f.Raw)
		}
	}
	var sseRaw []string
	for _, e := range alice.messages() {
		if strings.HasPrefix(e.data, `{"id":"`) {
			sseRaw = append(sseRaw, e.data)
			if !strings.HasPrefix(e.data, `{"id":"`+e.id+`"`) {
				t.Errorf("id line %q does not match %s", e.id, e.data)
			}
		}
	}
	if strings.Join(wsRaw, "\n") != strings.Join(sseRaw, "\n") {
		t.Fatalf("SSE frames differ from /ws:\n%v\n%v", sseRaw, wsRaw)
	}
	alice.mu.Lock()
	retry := alice.retry
	alice.mu.Unlock()
	if retry == "" {
		t.Errorf("no retry field")
	}
	// Keep-alive comments every ping_interval, and no close for silence.
	alice.waitFor("two keep-alive comments", func([]sseEvent) error {
		k := 0
		for _, e := range alice.snapshot() {
			if e.comment {
				k++
			}
		}
		if k < 3 {
			return fmt.Errorf("%d comments", k)
		}
		return nil
	})

	// Resume: by parameter, by header (EventSource's reconnect), by since,
	// and types.
	r1 := dialSSE(t, n.Listen, "user=alice&groups=ops&last_event_id="+a1)
	r1.waitEvents([]string{g1, all})
	r2 := dialSSE(t, n.Listen, "user=alice&groups=ops", "Last-Event-ID", g1)
	r2.waitEvents([]string{all})
	r3 := dialSSE(t, n.Listen, "user=alice&groups=ops&since="+strings.Split(a1, "-")[0])
	r3.waitEvents([]string{a1, g1, all})
	r4 := dialSSE(t, n.Listen, "user=alice&groups=ops&types=alarm.*&last_event_id=0-0")
	r4.waitEvents([]string{a1})
	if c := r2.waitControl("caught_up"); c.id != all {
		t.Fatalf("caught_up id %q, want %s", c.id, all)
	}
	// The parameter wins over the header, as on /ws.
	r5 := dialSSE(t, n.Listen, "user=alice&groups=ops&last_event_id="+g1, "Last-Event-ID", a1)
	r5.waitEvents([]string{all})

	// Drain ends every stream with the close event.
	if err := n.Stop(20 * time.Second); err != nil {
		t.Logf("stop: %v", err)
	}
	alice.waitClosed()
	ms := alice.messages()
	if last := ms[len(ms)-1]; last.event != "close" || !strings.Contains(last.data, `"code":1001`) {
		t.Fatalf("last event %+v, want the close event", last)
	}
	_ = context.Background()
}

// TestSSERefusals: /events refuses as /ws does.
func TestSSERefusals(t *testing.T) {
	rs := redistest.Start(t)
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--auth", "jwt", "--jwt-secret", "s3cret"}})
	for _, tc := range []struct {
		name, query string
		hdr         []string
		status      int
		reason      string
	}{
		{"origin", "token=x", []string{"Origin", "https://evil.example"}, 403, "origin not allowed"},
		{"bad token", "token=x", nil, 401, "invalid token"},
		{"no token", "", nil, 401, ""},
	} {
		for _, path := range []string{"/events", "/poll"} {
			c := dialStream(t, n.Listen, path, tc.query, tc.hdr...)
			if c.status != tc.status || !strings.Contains(c.body, tc.reason) || strings.Count(c.body, "\n") != 1 {
				t.Errorf("%s %s: %d %q, want %d %q", path, tc.name, c.status, c.body, tc.status, tc.reason)
			}
		}
	}
}
