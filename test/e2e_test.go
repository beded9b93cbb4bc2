package test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

func xadd(t testing.TB, rdb *redis.Client, stream string, fields ...string) string {
	t.Helper()
	vals := make([]any, 0, len(fields))
	for _, f := range fields {
		vals = append(vals, f)
	}
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: vals}).Result()
	if err != nil {
		t.Fatalf("XADD: %v", err)
	}
	return id
}

func TestEmbeddedRedisRoundTrip(t *testing.T) {
	n := e2e.StartNode(t, e2e.NodeOptions{})
	m := e2e.EmbeddedURL.FindString(n.Out.String())
	if m == "" {
		t.Fatalf("serve log does not name the embedded redis address:\n%s", n.Out.String())
	}
	if !strings.Contains(n.Out.String(), "auth") {
		t.Errorf("no auth warning in log")
	}
	c := e2e.Dial(t, n.Listen, "user=42", nil)
	c.WaitControl("caught_up", 5*time.Second)
	out, err := e2e.RunCLI(t, 20*time.Second, "publish", "--redis-url", m, "--to", "user:42", "--type", "alarm.fiber_break", "--data", `{"fiber":"F-12","km":3.2}`)
	if err != nil {
		t.Fatalf("publish: %v\n%s", err, out)
	}
	id := strings.TrimSpace(out)
	c.WaitEvents([]string{id}, 5*time.Second)
	want := `{"id":"` + id + `","type":"alarm.fiber_break","data":{"fiber":"F-12","km":3.2}}`
	if got := c.Snapshot()[1].Raw; got != want {
		t.Fatalf("frame = %s, want %s", got, want)
	}
}

func TestPublishWithoutRedisURLFails(t *testing.T) {
	out, err := e2e.RunCLI(t, 20*time.Second, "publish", "--to", "user:1", "--data", "1")
	if err == nil || !strings.Contains(out, "redis_url") {
		t.Fatalf("publish without redis_url: err=%v out=%s", err, out)
	}
}

func TestRefusesExternalRedisWithoutAuth(t *testing.T) {
	out, err := e2e.RunCLI(t, 20*time.Second, "serve", "--redis-url", "redis://127.0.0.1:1")
	if err == nil || !strings.Contains(out, "auth:") {
		t.Fatalf("serve with external redis and no auth: err=%v out=%s", err, out)
	}
}

func TestInvalidSettingStopsTheStart(t *testing.T) {
	out, err := e2e.RunCLI(t, 20*time.Second, "serve", "--replay-window", "-5")
	if err == nil || !strings.Contains(out, `replay_window: must be a positive size`) {
		t.Fatalf("err=%v out=%s", err, out)
	}
}

func TestConfigCommandRedactsSecrets(t *testing.T) {
	out, err := e2e.RunCLI(t, 20*time.Second, "config", "--jwt-secret", "hunter2")
	if err != nil || strings.Contains(out, "hunter2") || !strings.Contains(out, "[redacted]") {
		t.Fatalf("err=%v out=%s", err, out)
	}
}

func TestTargetingMatrix(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})

	alice := e2e.Dial(t, n.Listen, "user=alice&groups=ops,noc", nil)
	bob := e2e.Dial(t, n.Listen, "user=bob", nil)
	alarmsOnly := e2e.Dial(t, n.Listen, "user=carol&groups=ops&types=alarm.*", nil)
	for _, c := range []*e2e.Client{alice, bob, alarmsOnly} {
		c.WaitControl("caught_up", 5*time.Second)
	}
	type entry struct {
		to, typ, data string
		want          []*e2e.Client
	}
	entries := []entry{
		{"user:alice", "alarm.fiber_break", `{"fiber":"F-1"}`, []*e2e.Client{alice}},
		{"user:bob", "test.done", `"ok"`, []*e2e.Client{bob}},
		{"group:ops", "alarm.attenuation", `{"db":3.1}`, []*e2e.Client{alice, alarmsOnly}},
		{"group:op", "alarm.x", `1`, nil},                           // near miss
		{"user:alic", "alarm.x", `2`, nil},                          // near miss
		{"group:noc,user:alice", "info", `3`, []*e2e.Client{alice}}, // named twice: once
		{"*", "test.done", `{"msg":"ünïcödé ✓ \u00e9"}`, []*e2e.Client{alice, bob}},
		{"*", "alarm", `[1,2,3]`, []*e2e.Client{alice, bob}}, // alarm does not match alarm.*
		{"user:bob,group:ops", "alarm.power", `null`, []*e2e.Client{alice, bob, alarmsOnly}},
	}
	want := map[*e2e.Client][]string{}
	raw := map[string]string{}
	for _, e := range entries {
		id := xadd(t, rdb, "notifications", "to", e.to, "type", e.typ, "data", e.data)
		raw[id] = `{"id":"` + id + `","type":"` + e.typ + `","data":` + e.data + `}`
		for _, c := range e.want {
			want[c] = append(want[c], id)
		}
	}
	// A final broadcast marks the end so "nothing more" can be checked.
	end := xadd(t, rdb, "notifications", "to", "*", "type", "alarm.end", "data", `0`)
	raw[end] = `{"id":"` + end + `","type":"alarm.end","data":0}`
	for _, c := range []*e2e.Client{alice, bob, alarmsOnly} {
		want[c] = append(want[c], end)
	}
	for c, ids := range want {
		c.WaitEvents(ids, 10*time.Second)
		for _, f := range c.Snapshot() {
			if f.ID != "" && f.Raw != raw[f.ID] {
				t.Errorf("frame not byte-exact:\n got %s\nwant %s", f.Raw, raw[f.ID])
			}
		}
	}
}

func TestResumeByEachParameter(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})
	var ids []string
	for i := 0; i < 10; i++ {
		ids = append(ids, xadd(t, rdb, "notifications", "to", "user:u", "data", fmt.Sprint(i)))
	}
	live := e2e.Dial(t, n.Listen, "user=u", nil)
	live.WaitControl("caught_up", 5*time.Second)

	t.Run("last_event_id", func(t *testing.T) {
		c := e2e.Dial(t, n.Listen, "user=u&last_event_id="+ids[3], nil)
		c.WaitEvents(ids[4:], 5*time.Second)
		cu := c.WaitControl("caught_up", 5*time.Second)
		if cu.Last != ids[9] {
			t.Fatalf("caught_up.last = %s, want %s", cu.Last, ids[9])
		}
	})
	t.Run("Last-Event-ID header", func(t *testing.T) {
		c := e2e.Dial(t, n.Listen, "user=u", http.Header{"Last-Event-ID": {ids[7]}})
		c.WaitEvents(ids[8:], 5*time.Second)
	})
	t.Run("query wins over header", func(t *testing.T) {
		c := e2e.Dial(t, n.Listen, "user=u&last_event_id="+ids[8], http.Header{"Last-Event-ID": {ids[1]}})
		c.WaitEvents(ids[9:], 5*time.Second)
	})
	t.Run("since unix ms", func(t *testing.T) {
		ms := strings.Split(ids[5], "-")[0]
		c := e2e.Dial(t, n.Listen, "user=u&since="+ms, nil)
		c.WaitControl("caught_up", 5*time.Second)
		got := c.Events()
		if len(got) == 0 || got[len(got)-1] != ids[9] {
			t.Fatalf("since replay = %v", got)
		}
		for _, id := range got {
			if strings.Split(id, "-")[0] < ms && len(strings.Split(id, "-")[0]) == len(ms) {
				t.Fatalf("since replay includes %s before %s", id, ms)
			}
		}
	})
	t.Run("then live", func(t *testing.T) {
		c := e2e.Dial(t, n.Listen, "user=u&last_event_id="+ids[9], nil)
		c.WaitControl("caught_up", 5*time.Second)
		next := xadd(t, rdb, "notifications", "to", "user:u", "data", `"live"`)
		c.WaitEvents([]string{next}, 5*time.Second)
	})
	t.Run("malformed parameters are 400", func(t *testing.T) {
		for _, q := range []string{"user=u&last_event_id=abc", "user=u&since=yesterday", "user=u&types=al*rm",
			"user=u&last_event_id=1-0&since=0", "user=u&last_event_id=99999999999999-0"} {
			status, body := e2e.Handshake(t, n.Listen, q, nil)
			if status != 400 || strings.Contains(strings.TrimSpace(body), "\n") || body == "" {
				t.Errorf("%s: status %d body %q, want 400 and one line", q, status, body)
			}
		}
	})
}

func TestBadEntriesAreDeadLettered(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})
	c := e2e.Dial(t, n.Listen, "user=u", nil)
	c.WaitControl("caught_up", 5*time.Second)
	good1 := xadd(t, rdb, "notifications", "to", "user:u", "data", "1")
	bad := []string{
		xadd(t, rdb, "notifications", "to", "user:u", "data", "{not json"),
		xadd(t, rdb, "notifications", "to", "user:u, group:x", "data", "1"),
		xadd(t, rdb, "notifications", "to", "friend:u", "data", "1"),
		xadd(t, rdb, "notifications", "data", "1"),
		xadd(t, rdb, "notifications", "to", "user:u", "type", "bad type", "data", "1"),
	}
	good2 := xadd(t, rdb, "notifications", "to", "user:u", "data", "2")
	c.WaitEvents([]string{good1, good2}, 10*time.Second)
	var dead []redis.XMessage
	e2e.WaitFor(t, 10*time.Second, "dead letters", func() error {
		var err error
		dead, err = rdb.XRange(context.Background(), "notifications:dead", "-", "+").Result()
		if err == nil && len(dead) != len(bad) {
			err = fmt.Errorf("%d dead letters, want %d", len(dead), len(bad))
		}
		return err
	})
	for i, d := range dead {
		if d.Values["id"] != bad[i] || d.Values["reason"] == "" {
			t.Errorf("dead letter %d = %v, want id %s and a reason", i, d.Values, bad[i])
		}
	}
}

func TestSIGTERMDrainsWith1001(t *testing.T) {
	rs := redistest.Start(t)
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})
	var clients []*e2e.Client
	for i := 0; i < 50; i++ {
		c := e2e.Dial(t, n.Listen, fmt.Sprintf("user=u%d", i), nil)
		clients = append(clients, c)
	}
	for _, c := range clients {
		c.WaitControl("caught_up", 5*time.Second)
	}
	if err := n.Stop(15 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, e2e.LastLines(n.Out.String(), 30))
	}
	for i, c := range clients {
		if code := c.WaitClosed(5 * time.Second); code != 1001 {
			t.Errorf("client %d close code %d, want 1001", i, code)
		}
	}
}

func TestKill9AndRestartLosesNothing(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{AppendOnly: true, FsyncAlways: true})
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "crashy"})
	c := e2e.Dial(t, n.Listen, "user=u", nil)
	c.WaitControl("caught_up", 5*time.Second)
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, xadd(t, rdb, "notifications", "to", "user:u", "data", fmt.Sprint(i)))
	}
	c.WaitEvents(ids, 10*time.Second)
	n.Kill()
	for i := 20; i < 40; i++ {
		ids = append(ids, xadd(t, rdb, "notifications", "to", "user:u", "data", fmt.Sprint(i)))
	}
	n.Start()
	n.WaitReady(30 * time.Second)
	r := e2e.Dial(t, n.Listen, "user=u&last_event_id="+ids[19], nil)
	r.WaitEvents(ids[20:], 10*time.Second)
	r.WaitControl("caught_up", 5*time.Second)
}

func TestTwoNodesResumeAcross(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n1 := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "one"})
	n2 := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "two"})
	c1 := e2e.Dial(t, n1.Listen, "user=u", nil)
	c1.WaitControl("caught_up", 5*time.Second)
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, xadd(t, rdb, "notifications", "to", "user:u", "data", fmt.Sprint(i)))
	}
	c1.WaitEvents(ids, 5*time.Second)
	c1.Close()
	for i := 5; i < 10; i++ {
		ids = append(ids, xadd(t, rdb, "notifications", "to", "user:u", "data", fmt.Sprint(i)))
	}
	c2 := e2e.Dial(t, n2.Listen, "user=u&last_event_id="+ids[4], nil)
	c2.WaitEvents(ids[5:], 5*time.Second)
}
