package wspool

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// AuthRequest is what an Authenticator sees of a handshake: the query and
// the two headers a token may come in.
type AuthRequest struct {
	Query         url.Values
	Authorization string
	Cookie        string
}

// Authenticator turns a handshake into an identity. A non-nil error refuses
// the handshake with 401 and err.Error() as reason. The pool checks the
// names and the group count itself.
type Authenticator interface {
	Authenticate(r *AuthRequest) (Identity, error)
}

// ErrNoToken is returned by the JWT authenticator when the request carries
// no token.
var ErrNoToken = errors.New("missing token")

// NoneAuthenticator takes the identity from ?user=<id>&groups=a,b. It is for
// development and tests only.
type NoneAuthenticator struct{}

// NewNoneAuthenticator returns the auth=none authenticator.
func NewNoneAuthenticator() NoneAuthenticator { return NoneAuthenticator{} }

// Authenticate implements Authenticator.
func (NoneAuthenticator) Authenticate(r *AuthRequest) (Identity, error) {
	user := r.Query.Get("user")
	if user == "" {
		return Identity{}, errors.New("missing user")
	}
	id := Identity{User: user}
	if g := r.Query.Get("groups"); g != "" {
		id.Groups = strings.Split(g, ",")
	}
	return id, nil
}

// JWTConfig configures auth=jwt. At least one of Secret and PublicKeys must
// be set.
type JWTConfig struct {
	// Secret verifies HS256 tokens (jwt_secret).
	Secret []byte
	// PublicKeysPEM holds one or more PEM public keys (RSA verifies RS256,
	// P-256 ECDSA verifies ES256), as read from jwt_public_key_file. A key's
	// id is the PEM header "kid" when present, else its position ("0", "1", …).
	PublicKeysPEM []byte
	// Audience and Issuer, when set, must match aud and iss.
	Audience string
	Issuer   string
	// Leeway tolerates clock skew on exp and nbf (jwt_leeway).
	Leeway time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// JWTAuthenticator verifies JWTs with the signing method pinned to the key
// type, so alg=none and HS256 signed with a public key both fail.
type JWTAuthenticator struct {
	secret  []byte
	keys    map[string]any // kid → *rsa.PublicKey or *ecdsa.PublicKey
	onlyKey any            // the single key, used when a token has no kid
	methods []string
	parser  *jwt.Parser
	leeway  time.Duration
}

// LoadJWTPublicKeys reads jwt_public_key_file.
func LoadJWTPublicKeys(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwt_public_key_file: %w", err)
	}
	return b, nil
}

// NewJWTAuthenticator validates cfg and parses its keys.
func NewJWTAuthenticator(cfg JWTConfig) (*JWTAuthenticator, error) {
	a := &JWTAuthenticator{secret: cfg.Secret, keys: map[string]any{}, leeway: cfg.Leeway}
	if len(cfg.Secret) > 0 {
		a.methods = append(a.methods, jwt.SigningMethodHS256.Alg())
	}
	rest := cfg.PublicKeysPEM
	var hasRSA, hasEC bool
	for i := 0; ; i++ {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		key, err := parsePublicKey(blk)
		if err != nil {
			return nil, fmt.Errorf("jwt_public_key_file: key %d: %w", i, err)
		}
		kid := blk.Headers["kid"]
		if kid == "" {
			kid = fmt.Sprint(i)
		}
		if _, dup := a.keys[kid]; dup {
			return nil, fmt.Errorf("jwt_public_key_file: duplicate kid %q", kid)
		}
		a.keys[kid] = key
		a.onlyKey = key
		switch key.(type) {
		case *rsa.PublicKey:
			hasRSA = true
		case *ecdsa.PublicKey:
			hasEC = true
		}
	}
	if len(cfg.PublicKeysPEM) > 0 && len(a.keys) == 0 {
		return nil, errors.New("jwt_public_key_file: no PEM public key found")
	}
	if len(a.keys) != 1 {
		a.onlyKey = nil
	}
	if hasRSA {
		a.methods = append(a.methods, jwt.SigningMethodRS256.Alg())
	}
	if hasEC {
		a.methods = append(a.methods, jwt.SigningMethodES256.Alg())
	}
	if len(a.methods) == 0 {
		return nil, errors.New("auth: jwt needs jwt_secret or jwt_public_key_file")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(a.methods), jwt.WithLeeway(cfg.Leeway)}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

func parsePublicKey(blk *pem.Block) (any, error) {
	var key any
	var err error
	switch blk.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(blk.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		cert, err = x509.ParseCertificate(blk.Bytes)
		if err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf("PEM block %q is not a public key", blk.Type)
	}
	if err != nil {
		return nil, err
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		return k, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("ECDSA key is not P-256 (ES256)")
		}
		return k, nil
	}
	return nil, fmt.Errorf("unsupported key type %T (RSA or P-256 ECDSA only)", key)
}

type jwtClaims struct {
	jwt.RegisteredClaims
	Groups []string `json:"groups,omitempty"`
}

// Authenticate implements Authenticator.
func (a *JWTAuthenticator) Authenticate(r *AuthRequest) (Identity, error) {
	tok := extractToken(r)
	if tok == "" {
		return Identity{}, ErrNoToken
	}
	return a.Parse(tok)
}

// Parse verifies one token and returns its identity.
func (a *JWTAuthenticator) Parse(tok string) (Identity, error) {
	var cl jwtClaims
	_, err := a.parser.ParseWithClaims(tok, &cl, a.keyFor)
	if err != nil {
		return Identity{}, fmt.Errorf("invalid token: %s", oneLine(err.Error()))
	}
	id := Identity{User: cl.Subject, Groups: cl.Groups}
	if cl.ExpiresAt != nil {
		// The connection lives as long as the handshake check would pass.
		id.Expires = cl.ExpiresAt.Add(a.leeway)
	}
	if cl.IssuedAt != nil {
		id.IssuedAt = cl.IssuedAt.Time
	}
	return id, nil
}

// RevocableAuthenticator refuses identities its Check refuses, after Inner
// established them: a token of a revoked user, issued before the revocation.
// The refusal is Check's error, 401 like any other.
type RevocableAuthenticator struct {
	Inner Authenticator
	Check func(Identity) error
}

// Authenticate implements Authenticator.
func (a RevocableAuthenticator) Authenticate(r *AuthRequest) (Identity, error) {
	id, err := a.Inner.Authenticate(r)
	if err != nil {
		return id, err
	}
	if err := a.Check(id); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// keyFor pins the verification key to the token's method: an HS256 token
// only ever meets the secret, RS256 only RSA keys, ES256 only EC keys.
func (a *JWTAuthenticator) keyFor(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(a.secret) == 0 {
			return nil, errors.New("HMAC tokens are not accepted")
		}
		return a.secret, nil
	case *jwt.SigningMethodRSA, *jwt.SigningMethodECDSA:
	default:
		return nil, fmt.Errorf("signing method %v not accepted", t.Header["alg"])
	}
	var key any
	if kid, ok := t.Header["kid"]; ok {
		s, _ := kid.(string)
		if key = a.keys[s]; key == nil {
			return nil, fmt.Errorf("unknown kid %q", s)
		}
	} else if key = a.onlyKey; key == nil {
		return nil, errors.New("token has no kid and several keys are configured")
	}
	switch key.(type) {
	case *rsa.PublicKey:
		if _, ok := t.Method.(*jwt.SigningMethodRSA); !ok {
			return nil, errors.New("key is RSA, token is not RS256")
		}
	case *ecdsa.PublicKey:
		if _, ok := t.Method.(*jwt.SigningMethodECDSA); !ok {
			return nil, errors.New("key is ECDSA, token is not ES256")
		}
	}
	return key, nil
}

// TokenCookie is the cookie a browser may carry its token in.
const TokenCookie = "notifybridge_token"

// extractToken takes the token from Authorization: Bearer, then ?token=,
// then the notifybridge_token cookie.
func extractToken(r *AuthRequest) string {
	if h := strings.TrimSpace(r.Authorization); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	if t := r.Query.Get("token"); t != "" {
		return t
	}
	for c := range strings.SplitSeq(r.Cookie, ";") {
		name, val, ok := strings.Cut(strings.TrimSpace(c), "=")
		if ok && name == TokenCookie && val != "" {
			return strings.Trim(val, `"`)
		}
	}
	return ""
}

// oneLine keeps refusal bodies on one line whatever a library says.
func oneLine(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
