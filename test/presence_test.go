package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

func getPresence(t *testing.T, admin, query string) (int, map[string]any, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + admin + "/v1/presence?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m, string(b)
}

func waitPresence(t *testing.T, admin, query string, conns, nodes float64) {
	t.Helper()
	// Counts are refreshed every 5 s and a dead node's expire within 15 s.
	e2e.WaitFor(t, 25*time.Second, "presence "+query, func() error {
		status, m, body := getPresence(t, admin, query)
		if status != http.StatusOK || m["connections"] != conns || m["nodes"] != nodes {
			return fmt.Errorf("%d %s, want %v connections on %v nodes", status, body, conns, nodes)
		}
		return nil
	})
}

// Presence sums both nodes' counts, answers on either node's admin_listen
// and in the CLI, and forgets a node that died.
func TestPresenceAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	n1 := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "one"})
	n2 := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "two"})
	for _, d := range []struct {
		n *e2e.Node
		q string
	}{{n1, "user=u"}, {n1, "user=u&groups=noc-north"}, {n2, "user=u&groups=noc-north,ops"}} {
		e2e.Dial(t, d.n.Listen, d.q, nil).WaitControl("caught_up", 5*time.Second)
	}
	waitPresence(t, n1.Admin, "user=u", 3, 2)
	waitPresence(t, n2.Admin, "group=noc-north", 2, 2)
	waitPresence(t, n1.Admin, "group=ops", 1, 1)
	waitPresence(t, n1.Admin, "user=nobody", 0, 0)
	out, err := e2e.RunCLI(t, 20*time.Second, "presence", "--redis-url", rs.URL(), "--user", "u")
	if err != nil || strings.TrimSpace(out) != "user:u 3 connections on 2 nodes" {
		t.Fatalf("presence command: %v %q", err, out)
	}

	for _, q := range []string{"", "user=a&group=b", "user=" + strings.Repeat("x", 300), "group=" + url.QueryEscape("a b")} {
		if status, _, body := getPresence(t, n1.Admin, q); status != http.StatusBadRequest || strings.Count(body, "\n") != 1 {
			t.Errorf("?%.40s: %d %q, want 400 with one line", q, status, body)
		}
	}
	if _, err := e2e.RunCLI(t, 20*time.Second, "presence", "--redis-url", rs.URL(), "--user", strings.Repeat("x", 300)); err == nil {
		t.Errorf("presence command took a 300-byte name")
	}

	n2.Kill()
	waitPresence(t, n1.Admin, "user=u", 2, 1)
}
