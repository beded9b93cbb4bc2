package wspool

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	ecKey2   *ecdsa.PrivateKey
)

func testKeys(t testing.TB) {
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if ecKey2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	})
}

func pemPublic(t testing.TB, kid string, pub any) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	blk := &pem.Block{Type: "PUBLIC KEY", Bytes: der}
	if kid != "" {
		blk.Headers = map[string]string{"kid": kid}
	}
	return pem.EncodeToMemory(blk)
}

const testSecret = "s3cret-s3cret-s3cret-s3cret-0123"

func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(sub string, extra ...any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
	for i := 0; i+1 < len(extra); i += 2 {
		c[extra[i].(string)] = extra[i+1]
	}
	return c
}

func TestJWTOverHandshake(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.pem")
	pems := append(pemPublic(t, "rsa1", &rsaKey.PublicKey), pemPublic(t, "ec1", &ecKey.PublicKey)...)
	if err := os.WriteFile(keyFile, pems, 0o600); err != nil {
		t.Fatal(err)
	}
	pemBytes, err := LoadJWTPublicKeys(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := NewJWTAuthenticator(JWTConfig{Secret: []byte(testSecret), PublicKeysPEM: pemBytes, Audience: "nb", Issuer: "idp"})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(cfg *Config) { cfg.Auth = auth; cfg.MaxGroups = 3 })
	addr := h.addr()
	good := func(sub string, extra ...any) jwt.MapClaims {
		return claims(sub, append([]any{"aud", "nb", "iss", "idp"}, extra...)...)
	}
	hs := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", good("u1", "groups", []string{"ops", "noc"}))
	mustDial(t, addr, "/ws", "Authorization: Bearer "+hs)
	if a := h.conn("u1"); strings.Join(a.req.Identity.Groups, ",") != "ops,noc" || a.req.Identity.Expires.IsZero() {
		t.Fatalf("identity %+v", a.req.Identity)
	}
	mustDial(t, addr, "/ws?token="+url.QueryEscape(sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", good("u2"))))
	mustDial(t, addr, "/ws", "Cookie: other=1; notifybridge_token="+sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", good("u3")))
	mustDial(t, addr, "/ws", "Authorization: Bearer "+sign(t, jwt.SigningMethodRS256, rsaKey, "rsa1", good("u4")))
	mustDial(t, addr, "/ws", "Authorization: Bearer "+sign(t, jwt.SigningMethodES256, ecKey, "ec1", good("u5")))
	for _, u := range []string{"u2", "u3", "u4", "u5"} {
		h.conn(u)
	}

	bad := []struct {
		name, tok, want string
	}{
		{"missing", "", "missing token"},
		{"garbage", "abc.def.ghi", "invalid token"},
		{"expired", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", good("x", "exp", time.Now().Add(-time.Minute).Unix())), "expired"},
		{"nbf", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", good("x", "nbf", time.Now().Add(time.Hour).Unix())), "not valid yet"},
		{"aud", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims("x", "aud", "other", "iss", "idp")), "aud"},
		{"iss", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims("x", "aud", "nb", "iss", "evil")), "iss"},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-00"), "", good("x")), "signature"},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", good("x")), "invalid token"},
		{"HS with public key", sign(t, jwt.SigningMethodHS256, pemPublic(t, "", &rsaKey.PublicKey), "rsa1", good("x")), "invalid token"},
		{"RS256 with EC kid", sign(t, jwt.SigningMethodRS256, rsaKey, "ec1", good("x")), "not ES256"},
		{"unknown kid", sign(t, jwt.SigningMethodES256, ecKey, "nope", good("x")), "unknown kid"},
		{"other EC key", sign(t, jwt.SigningMethodES256, ecKey2, "ec1", good("x")), "invalid token"},
		{"no kid, two keys", sign(t, jwt.SigningMethodES256, ecKey, "", good("x")), "no kid"},
		{"HS384", sign(t, jwt.SigningMethodHS384, []byte(testSecret), "", good("x")), "invalid token"},
		{"bad sub", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", good("a,b")), "comma"},
		{"no sub", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", good("")), "empty"},
		{"groups not strings", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", good("x", "groups", []any{1, 2})), "invalid token"},
		{"bad group", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", good("x", "groups", []string{"ops", "a b"})), "group"},
		{"too many groups", sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", good("x", "groups", []string{"a", "b", "c", "d"})), "4 groups"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			var c *client
			if tc.tok == "" {
				c = dialWS(t, addr, "/ws")
			} else {
				c = dialWS(t, addr, "/ws", "Authorization: Bearer "+tc.tok)
			}
			checkRefused(t, c, 401, tc.want)
		})
	}
}

func TestJWTSingleKeyNoKid(t *testing.T) {
	testKeys(t)
	a, err := NewJWTAuthenticator(JWTConfig{PublicKeysPEM: pemPublic(t, "", &rsaKey.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Parse(sign(t, jwt.SigningMethodRS256, rsaKey, "", jwt.MapClaims{"sub": "u"}))
	if err != nil || id.User != "u" || !id.Expires.IsZero() {
		t.Fatalf("%+v %v", id, err)
	}
	// No secret configured: HS256 signed with the public key's PEM fails.
	if _, err := a.Parse(sign(t, jwt.SigningMethodHS256, pemPublic(t, "", &rsaKey.PublicKey), "", jwt.MapClaims{"sub": "u"})); err == nil {
		t.Fatal("algorithm confusion accepted")
	}
	// Leeway.
	b, _ := NewJWTAuthenticator(JWTConfig{Secret: []byte(testSecret), Leeway: time.Minute})
	if _, err := b.Parse(sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", jwt.MapClaims{"sub": "u", "exp": time.Now().Add(-30 * time.Second).Unix()})); err != nil {
		t.Fatalf("leeway: %v", err)
	}
	if _, err := NewJWTAuthenticator(JWTConfig{}); err == nil {
		t.Fatal("jwt without keys accepted")
	}
	if _, err := NewJWTAuthenticator(JWTConfig{PublicKeysPEM: []byte("not pem")}); err == nil {
		t.Fatal("bad PEM accepted")
	}
}

func TestExtractToken(t *testing.T) {
	for _, tc := range []struct {
		r    AuthRequest
		want string
	}{
		{AuthRequest{Authorization: "Bearer abc"}, "abc"},
		{AuthRequest{Authorization: "bearer  abc "}, "abc"},
		{AuthRequest{Authorization: "Basic abc", Query: url.Values{"token": {"q"}}}, "q"},
		{AuthRequest{Cookie: "a=b; notifybridge_token=c"}, "c"},
		{AuthRequest{Cookie: "notifybridge_token_x=c"}, ""},
		{AuthRequest{Authorization: "Bearer h", Query: url.Values{"token": {"q"}}, Cookie: "notifybridge_token=c"}, "h"},
	} {
		if got := extractToken(&tc.r); got != tc.want {
			t.Errorf("%+v: %q", tc.r, got)
		}
	}
}
