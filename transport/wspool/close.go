package wspool

import "github.com/gobwas/ws"

// closeReason is why the pool closes a connection with a close frame: the
// frame's code and text, and the cause Hooks.SlowClosed counts it under (""
// when it is not counted). A connection holds the first one requested.
//
// The pool's own reasons are the package values below: shared, read-only,
// with their frame compiled once, so a drain of 100k connections allocates
// neither a close request nor a close frame per connection. Only the core's
// Conn.Close (any code and text) and an echoed peer code make one at run
// time.
type closeReason struct {
	code  ws.StatusCode
	text  string
	cause string
	frame []byte // compiled close frame; nil for one made at run time
	sse   []byte // compiled SSE close event; nil for one made at run time
	// drain: write what the source has ready before the close frame. It
	// rides on the reason because a job may see the request before the
	// stDrain bit that Drain sets with it.
	drain bool
}

func newCloseReason(code ws.StatusCode, text, cause string) *closeReason {
	return &closeReason{code: code, text: text, cause: cause, frame: closeFrame(code, text), sse: sseCloseEvent(int(code), text)}
}

// closeFrame is the close frame of r, shared when it was compiled once.
func (r *closeReason) closeFrame() []byte {
	if r.frame != nil {
		return r.frame
	}
	return closeFrame(r.code, r.text)
}

// closeAbnormal is what Hooks.ConnClosed reports for a connection that ended
// without our close frame going out (RFC 6455 §7.4.1: never sent in one).
const closeAbnormal = ws.StatusAbnormalClosure

// The pool's close reasons (contract §2).
var (
	closeNormal    = newCloseReason(CloseNormal, "", "")
	closeGoingAway = &closeReason{code: CloseGoingAway, text: "node shutting down", frame: closeFrame(CloseGoingAway, "node shutting down"),
		sse: sseCloseEvent(CloseGoingAway, "node shutting down"), drain: true}
	closeTokenExpired = newCloseReason(ClosePolicy, "token expired", "")
	closeWriteTimeout = newCloseReason(CloseTryAgainLater, "write timeout", "write_timeout")
)

// Client frames that break RFC 6455 or our limits.
var (
	closeReservedBits  = newCloseReason(CloseProtocolError, "reserved bits set", "")
	closeNotMasked     = newCloseReason(CloseProtocolError, "client frame not masked", "")
	closeBadControl    = newCloseReason(CloseProtocolError, "bad control frame", "")
	closeUnknownOpcode = newCloseReason(CloseProtocolError, "unknown opcode", "")
	closeTextInMessage = newCloseReason(CloseProtocolError, "text frame inside a fragmented message", "")
	closeContNoMessage = newCloseReason(CloseProtocolError, "continuation without a message", "")
	closeBadCloseFrame = newCloseReason(CloseProtocolError, "bad close frame", "")
	closeBadCloseCode  = newCloseReason(CloseProtocolError, "bad close code", "")
	closeBinary        = newCloseReason(CloseUnsupported, "binary frames not supported", "")
	closeMessageTooBig = newCloseReason(CloseTooBig, "message too big", "")
)
