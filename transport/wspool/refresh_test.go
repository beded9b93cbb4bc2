package wspool

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestParseClientFrame(t *testing.T) {
	for _, tc := range []struct {
		in, tok, err string
	}{
		{`{"token":"a.b.c"}`, "a.b.c", ""},
		{` {"x":1,"token":"t"} `, "t", ""},
		{`{"TOKEN":"t"}`, "", errNotRefresh.Error()},
		{`{"type":"hello"}`, "", errNotRefresh.Error()},
		{`hello`, "", errNotRefresh.Error()},
		{`["token"]`, "", errNotRefresh.Error()},
		{``, "", errNotRefresh.Error()},
		{`{"token":1}`, "", "not a non-empty string"},
		{`{"token":""}`, "", "not a non-empty string"},
		{`{"token":null}`, "", "not a non-empty string"},
	} {
		tok, err := parseClientFrame([]byte(tc.in))
		if tok != tc.tok || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %q, %v; want %q, %q", tc.in, tok, err, tc.tok, tc.err)
		}
	}
}

func TestRefresh(t *testing.T) {
	a, err := NewJWTAuthenticator(JWTConfig{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	exp := now.Add(2 * time.Hour).Unix()
	hs := func(sub string, iat int64, groups ...string) string {
		c := jwt.MapClaims{"sub": sub, "exp": exp, "iat": iat}
		if groups != nil {
			c["groups"] = groups
		}
		return sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c)
	}
	iat := now.Unix()
	for _, tc := range []struct {
		name, frame string
		code        int    // 0: refreshed
		reason      string // part of the close reason
	}{
		{"same identity", `{"token":"` + hs("u1", iat, "b", "a") + `"}`, 0, ""},
		{"newer iat", `{"token":"` + hs("u1", iat+5, "a", "b") + `"}`, 0, ""},
		{"other sub", `{"token":"` + hs("u2", iat, "a", "b") + `"}`, ClosePolicy, "sub differs"},
		{"older iat", `{"token":"` + hs("u1", iat-5, "a", "b") + `"}`, ClosePolicy, "issued before"},
		{"groups changed", `{"token":"` + hs("u1", iat, "a") + `"}`, CloseGroupsChanged, "groups changed: reconnect"},
		{"forged", `{"token":"` + sign(t, jwt.SigningMethodHS256, []byte("other-secret-other-secret-0123456"), "", claims("u1")) + `"}`, ClosePolicy, "invalid token"},
		{"garbage", `{"token":"x.y.z"}`, ClosePolicy, "invalid token"},
		{"not a string", `{"token":7}`, ClosePolicy, "not a non-empty string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{timers: newTimers()}
			s.cfg.Auth = RevocableAuthenticator{Inner: a, Check: func(Identity) error {
				t.Error("the revocation check ran on the worker")
				return nil
			}}
			c := &Conn{s: s, tIdx: -1, kind: kindWS}
			c.setToken(&Identity{User: "u1", Groups: []string{"a", "b"}, Expires: now.Add(time.Minute), IssuedAt: time.Unix(iat, 0)})
			mask := [4]byte{1, 2, 3, 4}
			p := []byte(tc.frame)
			for i := range p {
				p[i] ^= mask[i%4]
			}
			c.onClientText(p, mask)
			r := c.closeReq.Load()
			if tc.code == 0 {
				if r != nil {
					t.Fatalf("closed %d %q", r.code, r.text)
				}
				if got := c.expiresAt(); got != time.Unix(exp, 0).UnixNano() {
					t.Fatalf("expiry %d, want %d", got, time.Unix(exp, 0).UnixNano())
				}
				if s.timers.h.Len() != 1 || s.timers.h[0].tDue != c.expiresAt() {
					t.Fatalf("timer not at the new expiry")
				}
				var ans struct {
					Control string
					Exp     int64
				}
				if err := json.Unmarshal(c.io.ctrl[2:], &ans); err != nil || ans.Control != "token" || ans.Exp != exp || c.io.ctrl[1] != byte(len(c.io.ctrl)-2) {
					t.Fatalf("answer %q: %v", c.io.ctrl, err)
				}
				return
			}
			if r == nil || int(r.code) != tc.code || !strings.Contains(r.text, tc.reason) || strings.ContainsAny(r.text, "\r\n") {
				t.Fatalf("close %+v, want %d %q", r, tc.code, tc.reason)
			}
			if c.expiresAt() != now.Add(time.Minute).UnixNano() {
				t.Fatal("expiry moved by a refused refresh")
			}
		})
	}
}

// With auth=none a token frame is an unknown client frame: ignored.
func TestRefreshIgnoredWithoutJWT(t *testing.T) {
	s := &Server{timers: newTimers()}
	s.cfg.Auth = NoneAuthenticator{}
	c := &Conn{s: s, tIdx: -1, kind: kindWS}
	c.onClientText([]byte(`{"token":"x"}`), [4]byte{})
	if c.closeReq.Load() != nil || c.io != nil {
		t.Fatal("token frame not ignored with auth=none")
	}
}

func FuzzClientFrame(f *testing.F) {
	for _, s := range []string{`{"token":"a.b.c"}`, `{"token":1}`, `{"type":"x"}`, `{"token":"\u0000"}`, `[`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		tok, err := parseClientFrame(p)
		if (err == nil) == (tok == "") {
			t.Fatalf("%q: token %q with error %v", p, tok, err)
		}
		// Bad UTF-8 becomes U+FFFD (3 bytes): a token is at most 3× its frame.
		if err == nil && len(tok) > 3*len(p) {
			t.Fatalf("%q: token %q longer than the frame allows", p, tok)
		}
		if len(tokenAnswer(int64(len(p))*int64(time.Second))) > 127 {
			t.Fatal("answer does not fit a short frame")
		}
	})
}
