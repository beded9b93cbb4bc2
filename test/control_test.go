package test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/notifybridge/notifybridge/publisher"
)

func disconnectCLI(t *testing.T, redisURL string, args ...string) string {
	t.Helper()
	out, err := e2e.RunCLI(t, 20*time.Second, append([]string{"disconnect", "--redis-url", redisURL}, args...)...)
	if err != nil {
		t.Fatalf("disconnect %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(out)
}

func wantRevoked(t *testing.T, c *e2e.Client, events []string, reason string) {
	t.Helper()
	if code := c.WaitClosed(10 * time.Second); code != 4001 {
		t.Fatalf("close code %d, want 4001; frames %s", code, c.Describe())
	}
	if got := c.Reason(); got != reason {
		t.Errorf("close reason %q, want %q", got, reason)
	}
	if got := strings.Join(c.Events(), ","); got != strings.Join(events, ",") {
		t.Errorf("events before the close %s, want %s (everything before the revoke, nothing after)", got, strings.Join(events, ","))
	}
}

// A disconnect entry closes the matching connections on both nodes after
// the events before it, and nothing after it reaches them; others stay.
// The same identity is refused while the revocation holds; once it is
// lifted, a resume that replays across the old entry is not closed by it.
func TestRevokeAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n1 := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "one"})
	n2 := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "two"})
	u1 := e2e.Dial(t, n1.Listen, "user=u", nil)
	u2 := e2e.Dial(t, n2.Listen, "user=u&groups=g", nil)
	ops := e2e.Dial(t, n1.Listen, "user=w&groups=ops", nil)
	other := e2e.Dial(t, n2.Listen, "user=v&groups=g", nil)
	for _, c := range []*e2e.Client{u1, u2, ops, other} {
		c.WaitControl("caught_up", 5*time.Second)
	}
	var before []string
	for i := range 3 {
		before = append(before, xadd(t, rdb, "notifications", "to", "user:u", "data", fmt.Sprint(i)))
	}
	revoke := disconnectCLI(t, rs.URL(), "--to", "user:u,group:ops", "--reason", "logged out")
	after := xadd(t, rdb, "notifications", "to", "user:u,group:ops,group:g", "data", `"after"`)

	wantRevoked(t, u1, before, "revoked: logged out")
	wantRevoked(t, u2, before, "revoked: logged out")
	wantRevoked(t, ops, nil, "revoked: logged out")
	other.WaitEvents([]string{after}, 5*time.Second)
	if other.Code() != 0 {
		t.Fatalf("user v was closed with %d", other.Code())
	}

	for _, n := range []*e2e.Node{n1, n2} {
		status, body := e2e.Handshake(t, n.Listen, "user=u", nil)
		if status != http.StatusUnauthorized || !strings.Contains(body, "revoked: user:u") {
			t.Errorf("reconnect of a revoked user: %d %q, want 401 revoked", status, body)
		}
	}
	if status, body := e2e.Handshake(t, n2.Listen, "user=x&groups=ops", nil); status != http.StatusUnauthorized || !strings.Contains(body, "group:ops") {
		t.Errorf("member of a revoked group: %d %q, want 401", status, body)
	}

	// Lifted by hand (docs/operations.md): a replay from the start crosses
	// the old entry and is not closed by it.
	if err := rdb.HDel(context.Background(), "notifications:revoked", "user:u").Err(); err != nil {
		t.Fatal(err)
	}
	again := e2e.Dial(t, n1.Listen, "user=u&last_event_id=0-0", nil)
	again.WaitEvents(append(append([]string{}, before...), after), 5*time.Second)
	again.WaitControl("caught_up", 5*time.Second)
	if again.Code() != 0 {
		t.Fatalf("replay across an old revoke closed with %d", again.Code())
	}
	_ = revoke
}

// Malformed control entries and unknown controls are dead-lettered with a
// reason and close nothing.
func TestBadControlEntriesAreDeadLettered(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})
	c := e2e.Dial(t, n.Listen, "user=u", nil)
	c.WaitControl("caught_up", 5*time.Second)
	bad := map[string]string{
		xadd(t, rdb, "notifications", "to", "user:u", "control", "mute"):                         "not a known control",
		xadd(t, rdb, "notifications", "to", "user:u", "control", "disconnect", "data", "1"):      "data field",
		xadd(t, rdb, "notifications", "to", "user:u", "control", "disconnect", "reason", "a\nb"): "reason:",
		xadd(t, rdb, "notifications", "to", "user:u, group:x", "control", "disconnect"):          "to:",
		xadd(t, rdb, "notifications", "control", "disconnect"):                                   "to: field is missing",
	}
	good := xadd(t, rdb, "notifications", "to", "user:u", "data", "1")
	c.WaitEvents([]string{good}, 10*time.Second)
	e2e.WaitFor(t, 10*time.Second, "dead letters", func() error {
		if got := deadIDs(t, rdb); len(got) != len(bad) {
			return fmt.Errorf("%d dead letters, want %d", len(got), len(bad))
		}
		return nil
	})
	dead, err := rdb.XRange(context.Background(), "notifications:dead", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dead {
		id, _ := d.Values["id"].(string)
		reason, _ := d.Values["reason"].(string)
		if want, ok := bad[id]; !ok || !strings.Contains(reason, want) {
			t.Errorf("dead letter %v: want a reason with %q", d.Values, want)
		}
	}
	if c.Code() != 0 {
		t.Fatalf("a bad control entry closed the connection: %d", c.Code())
	}
}

func token(t *testing.T, secret, sub string, iat time.Time) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "iat": iat.Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// With JWTs the revocation holds for tokens issued before it; a token
// issued after it connects.
func TestRevokeRefusesOlderTokens(t *testing.T) {
	rs := redistest.Start(t)
	const secret = "control-test-secret"
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--auth", "jwt", "--jwt-secret", secret}})
	old := token(t, secret, "42", time.Now().Add(-time.Minute))
	c := e2e.Dial(t, n.Listen, "token="+old, nil)
	c.WaitControl("caught_up", 5*time.Second)
	disconnectCLI(t, rs.URL(), "--to", "user:42")
	wantRevoked(t, c, nil, "revoked")
	if status, body := e2e.Handshake(t, n.Listen, "token="+old, nil); status != http.StatusUnauthorized || !strings.Contains(body, "revoked") {
		t.Fatalf("same token again: %d %q, want 401 revoked", status, body)
	}
	// iat is in whole seconds: a token of the next second is newer.
	fresh := token(t, secret, "42", time.Now().Add(time.Second))
	c2 := e2e.Dial(t, n.Listen, "token="+fresh, nil)
	c2.WaitControl("caught_up", 5*time.Second)
}

// Bad input for the command: nothing is written.
func TestDisconnectCommandRefusesBadInput(t *testing.T) {
	rs := redistest.Start(t)
	for _, args := range [][]string{{"--to", "friend:1"}, {"--to", "user:1", "--reason", "a\nb"}, {"--to", ""}} {
		out, err := e2e.RunCLI(t, 20*time.Second, append([]string{"disconnect", "--redis-url", rs.URL()}, args...)...)
		if err == nil {
			t.Errorf("disconnect %q succeeded: %s", args, out)
		}
	}
	if n, _ := rs.Client().Exists(context.Background(), "notifications", "notifications:revoked").Result(); n != 0 {
		t.Fatalf("refused disconnects wrote %d keys", n)
	}
}

// The render-time cursor closes the race between a page's query and its
// connect: an event appended after the cursor was read and before the
// connection exists is delivered on connect, and nothing before it.
func TestRenderCursorClosesTheRace(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})
	shown := xadd(t, rdb, "notifications", "to", "user:u", "data", `"on the page"`)
	cursor, err := publisher.New(rdb, "notifications", bridge.DefaultLimits).Cursor(context.Background())
	if err != nil || cursor != shown {
		t.Fatalf("Cursor = %q, %v; want %s", cursor, err, shown)
	}
	missed := xadd(t, rdb, "notifications", "to", "user:u", "data", `"between render and connect"`)
	c := e2e.Dial(t, n.Listen, "user=u&last_event_id="+cursor, nil)
	c.WaitEvents([]string{missed}, 5*time.Second)
	c.WaitControl("caught_up", 5*time.Second)
	if got := c.Events(); len(got) != 1 {
		t.Fatalf("events %v, want only %s", got, missed)
	}
}
