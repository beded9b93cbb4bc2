// Package wspool is the WebSocket edge: handshake, auth, origin, and an epoll
// connection pool with one pull-based writer per connection.
package wspool

// This file is the seam between the WebSocket pool and the core. The pool
// knows connections, identities and frames; it does not know events or
// recipients.

import (
	"errors"
	"net/url"
	"time"
)

// Identity is who a connection belongs to, established at handshake.
type Identity struct {
	User   string
	Groups []string
	// Expires is the token's exp; zero means the connection never expires.
	Expires time.Time
	// IssuedAt is the token's iat; zero when it has none (or auth=none). A
	// revocation check compares it with the revocation's time.
	IssuedAt time.Time
}

// Request is what the pool hands the core's AcceptFunc during a handshake,
// after the Origin and identity checks passed and before the upgrade.
type Request struct {
	// Conn is the connection's handle. The core may keep it to Wake or Close it
	// until Source.Closed is called; before the upgrade completes a Wake is
	// remembered and served right after it.
	Conn *Conn
	// Identity is the verified identity.
	Identity Identity
	// Query is the parsed request query (resume parameters live here).
	Query url.Values
	// LastEventID is the Last-Event-ID header, "" when absent.
	LastEventID string
}

// AcceptFunc is the core's handshake callback. A non-nil error refuses the
// handshake with err.Error() as its one-line reason: HTTP 503 when it wraps
// ErrUnavailable (the core cannot decide now, the client should retry), else
// HTTP 400 (the request itself is wrong).
type AcceptFunc func(req *Request) (Source, error)

// ErrUnavailable marks AcceptFunc errors that are the server's, not the
// request's: they refuse with 503 and Retry-After.
var ErrUnavailable = errors.New("temporarily unavailable")

// Source is what a connection's single drainer pulls frames from. The core
// implements it; there is no per-connection frame queue.
type Source interface {
	// Pull appends complete WebSocket frames that are ready for this connection
	// to bufs and returns the extended slice, stopping once maxBytes or more
	// were added (always at least one frame when any is ready). Adding fewer
	// than maxBytes means nothing more was ready: the pool does not ask again
	// until the next Wake. Frames are shared and read-only: the pool never
	// modifies or recycles them. Pull is never called concurrently for one
	// connection, and never called after Closed.
	Pull(bufs [][]byte, maxBytes int) [][]byte
	// Closed tells the core the connection is gone. It is called exactly once,
	// also when the upgrade fails after a successful AcceptFunc.
	Closed()
}

// Close codes of contract §2.
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001 // node shutting down
	CloseProtocolError = 1002
	CloseUnsupported   = 1003 // client binary frames
	ClosePolicy        = 1008 // token expired
	CloseTooBig        = 1009 // client frame over max_message_bytes
	CloseTryAgainLater = 1013 // client too slow / fell out of the replay window
)

// Hooks receive the pool's observations; the operations layer turns them into
// metrics. Every method must be cheap and safe for concurrent use. A nil
// Hooks in Config means no observation.
type Hooks interface {
	ConnOpened()
	ConnClosed(code int)
	HandshakeRefused(status int, reason string)
	FramesWritten(frames, bytes int)
	WriteError()
	SlowClosed(cause string)
}
