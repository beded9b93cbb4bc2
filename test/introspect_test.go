package test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// GET /debug/connections lists this node's connections of a user or group,
// bounded, with no token; bad names get 400.
func TestDebugConnections(t *testing.T) {
	rs := redistest.Start(t)
	const secret = "introspect-secret"
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--auth", "jwt", "--jwt-secret", secret}})
	tok := token(t, secret, "42", time.Now())
	c := e2e.Dial(t, n.Listen, "token="+tok+"&types=alarm.*,test.done", nil)
	c.WaitControl("caught_up", 5*time.Second)
	id := xadd(t, rs.Client(), "notifications", "to", "user:42", "type", "alarm.x", "data", "1")
	c.WaitEvents([]string{id}, 5*time.Second)

	get := func(q string) (int, string) {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + n.Admin + "/debug/connections?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, body := get("user=42")
	var ans struct {
		Total       int
		Connections []map[string]any
	}
	if status != 200 || json.Unmarshal([]byte(body), &ans) != nil || ans.Total != 1 || len(ans.Connections) != 1 {
		t.Fatalf("%d %s", status, body)
	}
	got := ans.Connections[0]
	if got["user"] != "42" || got["types"] != "test.done,alarm.*" || got["transport"] != "websocket" ||
		got["remote"] != "127.0.0.1" || got["position"] != id {
		t.Errorf("connection %v", got)
	}
	if strings.Contains(body, tok) || strings.Contains(body, secret) {
		t.Errorf("answer carries the token: %s", body)
	}
	if status, body := get("group=nobody"); status != 200 || !strings.Contains(body, `"total":0`) {
		t.Errorf("empty group: %d %s", status, body)
	}
	for _, q := range []string{"", "user=" + strings.Repeat("x", 300), "user=a&group=b"} {
		if status, _ := get(q); status != 400 {
			t.Errorf("?%.30s: %d, want 400", q, status)
		}
	}
}
