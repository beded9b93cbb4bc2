package wspool

// In-band token refresh: a client sends {"token":"<jwt>"} on a live
// WebSocket; the pool verifies it like the handshake's, moves the
// connection's expiry and answers {"control":"token","exp":<unix s>}.
//
// Revocation: the handshake's RevocableAuthenticator asks Redis, which must
// not happen on a worker. A refresh skips that check and instead requires
// the new token's iat to be no older than the connection's: the connection's
// token passed the revocation check at the handshake, so a token issued
// before a revocation the handshake knew of is refused, and a revocation
// made later reaches the live connection through the stream (4001) on every
// node anyway.
//
// Changed groups close with 4002: the core fixed the connection's recipient
// lists at Accept and its cursor keeps a position against them; changing
// them in place would make events between the old and new membership
// depend on timing. A reconnect with the new token resumes from the last id
// with the new lists, exactly.

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/gobwas/ws"
)

// CloseGroupsChanged is the private close code of a refresh whose token
// names other groups: reconnect with the new token and resume.
const CloseGroupsChanged = 4002

var (
	closeOtherSub      = newCloseReason(ClosePolicy, "token refresh: sub differs from the connection's", "")
	closeOlderToken    = newCloseReason(ClosePolicy, "token refresh: token issued before the connection's", "")
	closeGroupsChanged = newCloseReason(CloseGroupsChanged, "groups changed: reconnect", "")
)

// tokenState is what a connection keeps of its token, replaced whole on a
// refresh (the timer loop reads it concurrently); nil without a token.
type tokenState struct {
	expires int64 // unix ns (0: never)
	iat     int64 // unix s (0: none)
	user    string
	groups  []string
}

func newTokenState(id *Identity) *tokenState {
	t := &tokenState{user: id.User, groups: id.Groups}
	if !id.Expires.IsZero() {
		t.expires = id.Expires.UnixNano()
	}
	if !id.IssuedAt.IsZero() {
		t.iat = id.IssuedAt.Unix()
	}
	return t
}

// setToken records the handshake's identity; before registration.
func (c *Conn) setToken(id *Identity) {
	if !id.Expires.IsZero() || !id.IssuedAt.IsZero() {
		c.tok.Store(newTokenState(id))
	}
}

// expiresAt is the connection's expiry, unix ns (0: never).
func (c *Conn) expiresAt() int64 {
	if t := c.tok.Load(); t != nil {
		return t.expires
	}
	return 0
}

// errNotRefresh says a client frame is not a refresh: ignored (contract).
var errNotRefresh = errors.New("not a token refresh")

// parseClientFrame reads a client text message: the token of a refresh, or
// errNotRefresh for any other message. A "token" member that is not a
// non-empty string is an error of its own.
func parseClientFrame(p []byte) (string, error) {
	var m map[string]json.RawMessage // exact keys: encoding/json folds case on structs
	if json.Unmarshal(p, &m) != nil {
		return "", errNotRefresh
	}
	raw, ok := m["token"]
	if !ok {
		return "", errNotRefresh
	}
	var tok string
	if json.Unmarshal(raw, &tok) != nil || tok == "" {
		return "", errors.New("token refresh: token is not a non-empty string")
	}
	return tok, nil
}

// tokenParser is what verifies a bare token with the handshake's keys and
// rules, without the revocation check (see above); nil when auth has none
// (auth=none): then a refresh is an unknown frame, ignored.
func tokenParser(a Authenticator) func(string) (Identity, error) {
	switch v := a.(type) {
	case RevocableAuthenticator:
		return tokenParser(v.Inner)
	case *RevocableAuthenticator:
		return tokenParser(v.Inner)
	case interface {
		Parse(string) (Identity, error)
	}:
		return v.Parse
	}
	return nil
}

// onClientText handles a complete single-frame client text message's
// masked payload (unmasked in place: the bytes are consumed). It runs on the
// job; it only verifies a signature, no I/O.
func (c *Conn) onClientText(payload []byte, mask [4]byte) {
	if c.kind != kindWS || c.s == nil { // nil: a bare Conn of a frame test
		return
	}
	parse := tokenParser(c.s.cfg.Auth)
	if parse == nil {
		return
	}
	ws.Cipher(payload, mask, 0)
	tok, err := parseClientFrame(payload)
	if err == errNotRefresh {
		return
	}
	if r := c.refresh(parse, tok, err); r != nil {
		c.closeReq.CompareAndSwap(nil, r)
	}
}

// refresh applies a refresh token and queues the answer; it returns why to
// close instead.
func (c *Conn) refresh(parse func(string) (Identity, error), tok string, err error) *closeReason {
	if err != nil {
		return &closeReason{code: ClosePolicy, text: err.Error()}
	}
	id, err := parse(tok)
	if err != nil {
		return &closeReason{code: ClosePolicy, text: "token refresh: " + err.Error()}
	}
	old := c.tok.Load()
	if old == nil {
		old = &tokenState{}
	}
	nt := newTokenState(&id)
	switch {
	case old.user != "" && nt.user != old.user:
		return closeOtherSub
	case old.iat != 0 && nt.iat < old.iat:
		return closeOlderToken
	case !sameGroups(old.groups, nt.groups):
		return closeGroupsChanged
	}
	// Keep the connection's lists (equal as sets) rather than the new order.
	nt.user, nt.groups = old.user, old.groups
	c.tok.Store(nt)
	if nt.expires != 0 {
		// set keeps an earlier check: the old expiry's check then only
		// recomputes and reschedules at the new one.
		c.s.timers.set(c, nt.expires)
	}
	x := c.ioState()
	x.ctrl = append(x.ctrl, tokenAnswer(nt.expires)...)
	return nil
}

// sameGroups compares two group lists as sets.
func sameGroups(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// tokenAnswer is the text frame {"control":"token","exp":<unix s>} (exp 0:
// the connection no longer expires).
func tokenAnswer(expires int64) []byte {
	var exp int64
	if expires != 0 {
		exp = time.Unix(0, expires).Unix()
	}
	p := strconv.AppendInt([]byte(`{"control":"token","exp":`), exp, 10)
	p = append(p, '}')
	return append([]byte{0x81, byte(len(p))}, p...) // < 126 bytes
}
