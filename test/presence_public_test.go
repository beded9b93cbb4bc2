package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// getListenPresence asks GET /v1/presence on listen with the token in the
// way named (bearer, cookie or query; "" sends none).
func getListenPresence(t *testing.T, listen, query, how, token string) (int, string) {
	t.Helper()
	u := "http://" + listen + "/v1/presence?" + query
	if how == "query" {
		u += "&token=" + token
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	switch how {
	case "bearer":
		req.Header.Set("Authorization", "Bearer "+token)
	case "cookie":
		req.Header.Set("Cookie", "theme=dark; notifybridge_token="+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b)
}

// presence_public: GET /v1/presence on listen answers callers with a valid
// token (bearer, cookie or ?token=, revocations checked) exactly as
// admin_listen does, refuses others with 401 and bad queries with 400, one
// line each; without the setting the path is not served on listen; with
// auth=none the node refuses to start, naming the setting.
func TestPresencePublicOnListen(t *testing.T) {
	rs := redistest.Start(t)
	const secret = "presence-public-secret-0123456789"
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "pub",
		Args: []string{"--auth", "jwt", "--jwt-secret", secret, "--presence-public"}})
	tok := func(key, sub string, iat time.Time, groups ...string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": sub, "iat": iat.Unix(), "exp": time.Now().Add(time.Hour).Unix(), "groups": groups,
		}).SignedString([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	early := time.Now().Add(-time.Minute)
	e2e.Dial(t, n.Listen, "token="+tok(secret, "alice", early, "noc-north"), nil).WaitControl("caught_up", 5*time.Second)
	e2e.Dial(t, n.Listen, "token="+tok(secret, "bob", early, "noc-north"), nil).WaitControl("caught_up", 5*time.Second)
	waitPresence(t, n.Admin, "group=noc-north", 2, 1)

	caller := tok(secret, "carol", early)
	for _, q := range []string{"group=noc-north", "user=alice", "user=nobody"} {
		_, admin, _ := getPresence(t, n.Admin, q)
		want, _ := json.Marshal(admin)
		for _, how := range []string{"bearer", "cookie", "query"} {
			status, body := getListenPresence(t, n.Listen, q, how, caller)
			var got map[string]any
			_ = json.Unmarshal([]byte(body), &got)
			if g, _ := json.Marshal(got); status != http.StatusOK || string(g) != string(want) {
				t.Errorf("%s by %s: %d %s, want 200 %s (admin_listen's answer)", q, how, status, body, want)
			}
		}
	}

	oneLine := func(what string, status int, body string, want int) {
		t.Helper()
		if status != want || strings.Count(body, "\n") != 1 || len(body) < 10 {
			t.Errorf("%s: %d %q, want %d with a one-line reason", what, status, body, want)
		}
	}
	status, body := getListenPresence(t, n.Listen, "user=alice", "", "")
	oneLine("no token", status, body, http.StatusUnauthorized)
	status, body = getListenPresence(t, n.Listen, "user=alice", "bearer", tok("another-secret-another-secret-0123", "carol", early))
	oneLine("forged token", status, body, http.StatusUnauthorized)
	status, body = getListenPresence(t, n.Listen, "user=alice", "bearer", "not.a.jwt")
	oneLine("garbage token", status, body, http.StatusUnauthorized)
	for _, q := range []string{"", "user=a&group=b", "user=" + strings.Repeat("x", 300), "group=" + strings.Repeat("g", 5000), "group=a%20b"} {
		status, body := getListenPresence(t, n.Listen, q, "bearer", caller)
		oneLine(fmt.Sprintf("?%.30s", q), status, body, http.StatusBadRequest)
	}

	// A revoked caller's token (issued before the revocation) is refused.
	if out, err := e2e.RunCLI(t, 20*time.Second, "disconnect", "--redis-url", rs.URL(), "--to", "user:carol", "--reason", "left"); err != nil {
		t.Fatalf("disconnect: %v %s", err, out)
	}
	status, body = getListenPresence(t, n.Listen, "user=alice", "bearer", caller)
	oneLine("revoked caller", status, body, http.StatusUnauthorized)

	// Without the setting, listen does not serve the path.
	off := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "off", Args: []string{"--auth", "jwt", "--jwt-secret", secret}})
	if status, body := getListenPresence(t, off.Listen, "user=alice", "bearer", tok(secret, "dave", time.Now())); status != http.StatusNotFound {
		t.Errorf("presence_public off: %d %q, want 404", status, body)
	}

	out, err := e2e.RunCLI(t, 20*time.Second, "serve", "--redis-url", rs.URL(), "--auth", "none", "--presence-public",
		"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(out, "presence_public: needs auth=jwt") {
		t.Errorf("serve with presence_public and auth=none: %v %q, want a refusal naming presence_public", err, e2e.LastLines(out, 5))
	}
}
