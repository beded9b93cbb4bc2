package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

const nginxStreams = "../deploy/nginx/notifybridge-streams.inc"

// includeStreams writes the committed notifybridge-streams.inc (with the
// replacements in more, each of which must occur once) into dir and points
// the server's include at it.
func includeStreams(t *testing.T, dir, conf string, more ...string) string {
	t.Helper()
	raw, err := os.ReadFile(nginxStreams)
	if err != nil {
		t.Fatal(err)
	}
	inc := string(raw)
	for i := 0; i+1 < len(more); i += 2 {
		if n := strings.Count(inc, more[i]); n != 1 {
			t.Fatalf("%s: %q occurs %d times, want once", nginxStreams, more[i], n)
		}
		inc = strings.Replace(inc, more[i], more[i+1], 1)
	}
	path := filepath.Join(dir, "notifybridge-streams.inc")
	if err := os.WriteFile(path, []byte(inc), 0o600); err != nil {
		t.Fatal(err)
	}
	const line = "include /etc/nginx/notifybridge-streams.inc;"
	if n := strings.Count(conf, line); n != 1 {
		t.Fatalf("%s: %q occurs %d times, want once", nginxConf, line, n)
	}
	return strings.Replace(conf, line, "include "+path+";", 1)
}

// TestProxyNginxStreams: through the committed nginx config, /events
// streams events as they come (also when the location buffers: the
// bridge's X-Accel-Buffering: no) and /poll answers; both with the default
// Origin check.
func TestProxyNginxStreams(t *testing.T) {
	for _, tc := range []struct {
		name string
		more []string
	}{
		{"as committed", nil},
		{"buffering on", []string{"    proxy_buffering off;", "    proxy_buffering on;"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := redistest.Start(t)
			rdb := rs.Client()
			n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--poll-timeout", "2s"}})
			p := startProxyStreams(t, front(t), n.Listen, tc.more)
			origin := "https://" + p.Public
			s := dialSSE(t, p.Public, "user=42", "Origin", origin)
			if s.status != 200 {
				t.Fatalf("SSE through nginx: %d %q", s.status, s.body)
			}
			cu := s.waitControl("caught_up")
			id := xadd(t, rdb, "notifications", "to", "user:42", "type", "t", "data", `{"a":1}`)
			s.waitEvents([]string{id})
			if got := s.messages()[1].data; got != `{"id":"`+id+`","type":"t","data":{"a":1}}` {
				t.Fatalf("SSE frame through nginx: %s", got)
			}
			r := doPoll(t, p.Public, "user=42&last_event_id="+cu.id, "Origin", origin)
			if r.status != 200 || strings.Join(r.events(), ",") != id || r.Last != id {
				t.Fatalf("poll through nginx: %d %s", r.status, r.body)
			}
			start := time.Now()
			r = doPoll(t, p.Public, "user=42&last_event_id="+id, "Origin", origin)
			if r.status != 200 || len(r.events()) != 0 || r.Last != id || time.Since(start) < 1500*time.Millisecond {
				t.Fatalf("empty poll through nginx: %d %s after %v", r.status, r.body, time.Since(start))
			}
			if bad := dialSSE(t, p.Public, "user=42", "Origin", "https://evil.example"); bad.status != 403 {
				t.Fatalf("foreign Origin through nginx: %d", bad.status)
			}
		})
	}
}
