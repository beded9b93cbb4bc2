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

func postPublish(t *testing.T, addr, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+addr+"/v1/publish", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// An event published over HTTP on one node is delivered from the other,
// in stream order with the XADDed ones; bad bodies and keys get a status and
// a reason, and write nothing.
func TestHTTPPublishAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	const key = "publish-test-key"
	n1 := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "one", Args: []string{"--publish-key", key}})
	n2 := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "two"})
	c := e2e.Dial(t, n2.Listen, "user=u", nil)
	c.WaitControl("caught_up", 5*time.Second)

	first := xadd(t, rdb, "notifications", "to", "user:u", "data", "1")
	status, body := postPublish(t, n1.Listen, key, `{"to":"user:u","type":"alarm.fiber","data":{"km": 3.2}}`)
	var ans struct{ ID string }
	if status != http.StatusOK || json.Unmarshal([]byte(body), &ans) != nil || ans.ID == "" {
		t.Fatalf("publish: %d %q", status, body)
	}
	c.WaitEvents([]string{first, ans.ID}, 5*time.Second)
	if got := c.Snapshot(); !strings.Contains(got[len(got)-1].Raw, `"type":"alarm.fiber","data":{"km": 3.2}`) {
		t.Errorf("frame %s: want data byte for byte", got[len(got)-1].Raw)
	}

	huge := `{"to":"user:u","data":"` + strings.Repeat("x", 2<<20) + `"}`
	for _, tc := range []struct {
		name, key, body string
		status          int
		reason          string
	}{
		{"no key", "", `{"to":"user:u","data":1}`, 401, "publish key"},
		{"wrong key", "nope", `{"to":"user:u","data":1}`, 401, "publish key"},
		{"not JSON", key, `{"to":`, 400, "body:"},
		{"unknown field", key, `{"to":"user:u","data":1,"extra":2}`, 400, "unknown field"},
		{"two values", key, `{"to":"user:u","data":1} {}`, 400, "more than one"},
		{"missing to", key, `{"data":1}`, 400, "to: field is missing"},
		{"bad to", key, `{"to":"friend:u","data":1}`, 400, "to: item"},
		{"to not a string", key, `{"to":["user:u"],"data":1}`, 400, "body:"},
		{"missing data", key, `{"to":"user:u"}`, 400, "data: field is missing"},
		{"empty type", key, `{"to":"user:u","type":"","data":1}`, 400, "type: is empty"},
		{"too big", key, huge, 413, "larger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := postPublish(t, n1.Listen, tc.key, tc.body)
			if status != tc.status || !strings.Contains(body, tc.reason) || strings.Count(body, "\n") != 1 {
				t.Errorf("%d %q, want %d with %q on one line", status, body, tc.status, tc.reason)
			}
			if strings.Contains(body, key) {
				t.Errorf("answer carries the key: %q", body)
			}
		})
	}
	if n, _ := rdb.XLen(t.Context(), "notifications").Result(); n != 2 {
		t.Errorf("stream holds %d entries, want 2: refused publishes wrote", n)
	}
	if strings.Contains(n1.Out.String(), key) {
		t.Errorf("the publish key is in the log")
	}
	// Off without publish_key: the path is not served.
	if status, _ := postPublish(t, n2.Listen, key, `{"to":"user:u","data":1}`); status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
		t.Errorf("node without publish_key answered %d", status)
	}
}
