package test

import (
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// In-band token refresh on the binary: the connection outlives its first
// token's exp and keeps receiving events; a forged token or another sub
// closes 1008, changed groups 4002.
func TestInBandTokenRefresh(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	const secret = "refresh-test-secret-0123456789ab"
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--auth", "jwt", "--jwt-secret", secret, "--jwt-leeway", "0s"}})
	iat := time.Now().Add(-time.Second).Unix()
	tok := func(key, sub string, exp time.Time, groups ...string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": sub, "iat": iat, "exp": exp.Unix(), "groups": groups,
		}).SignedString([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	send := func(c *e2e.Client, frame string) {
		t.Helper()
		if err := wsutil.WriteClientMessage(c.Conn(), ws.OpText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	dial := func() (*e2e.Client, time.Time) {
		exp := time.Now().Add(3 * time.Second)
		c := e2e.Dial(t, n.Listen, "token="+tok(secret, "42", exp, "ops"), nil)
		c.WaitControl("caught_up", 5*time.Second)
		return c, exp
	}

	unrefreshed, _ := dial() // proves the first exp does close
	c, exp := dial()
	send(c, `{"hello":"unknown frames are ignored"}`)
	later := time.Now().Add(time.Hour)
	send(c, `{"token":"`+tok(secret, "42", later, "ops")+`"}`)
	ans := c.WaitControl("token", 5*time.Second)
	if want := `{"control":"token","exp":` + itoa(later.Unix()) + `}`; ans.Raw != want {
		t.Fatalf("answer %s, want %s", ans.Raw, want)
	}
	time.Sleep(time.Until(exp.Add(1500 * time.Millisecond))) // past the first exp
	select {
	case <-c.Done():
		t.Fatalf("closed at the old exp: %d %q", c.Code(), c.Reason())
	default:
	}
	if got := unrefreshed.WaitClosed(5 * time.Second); got != ws.StatusPolicyViolation {
		t.Fatalf("the connection without refresh closed %d, want 1008 at its exp", got)
	}
	id := xadd(t, rdb, "notifications", "to", "group:ops", "type", "t", "data", `{}`)
	c.WaitEvents([]string{id}, 5*time.Second)

	for _, tc := range []struct {
		name, frame string
		code        ws.StatusCode
	}{
		{"forged", `{"token":"` + tok("another-secret-another-secret-01", "42", later, "ops") + `"}`, ws.StatusPolicyViolation},
		{"other sub", `{"token":"` + tok(secret, "43", later, "ops") + `"}`, ws.StatusPolicyViolation},
		{"groups changed", `{"token":"` + tok(secret, "42", later, "ops", "noc") + `"}`, 4002},
	} {
		c, _ := dial()
		send(c, tc.frame)
		if got := c.WaitClosed(5 * time.Second); got != tc.code || c.Reason() == "" {
			t.Errorf("%s: closed %d %q, want %d with a reason", tc.name, got, c.Reason(), tc.code)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
