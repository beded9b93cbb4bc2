package wspool

// Frame layout and the RFC 6455 checks of client frames, as pure functions
// of bytes and headers: no connection state, no socket. Types and checks are
// gobwas/ws's where they fit; read.go applies them to a connection.

import (
	"encoding/binary"
	"math"

	"github.com/gobwas/ws"
)

// pingFrame is the server's keepalive ping (no payload).
var pingFrame = ws.CompiledPing

// parseHeader parses the frame header at the start of b and returns it with
// its length; ok is false while b is too short to hold it. gobwas's
// ReadHeader wants an io.Reader and a buffer per call; the pool parses in
// place, bytes that may end mid-header included.
func parseHeader(b []byte) (h ws.Header, hlen int, ok bool) {
	if len(b) < 2 {
		return h, 0, false
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0F)
	h.Masked = b[1]&0x80 != 0
	hlen = 2
	switch l := b[1] & 0x7F; l {
	case 126:
		if len(b) < 4 {
			return h, 0, false
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
		hlen = 4
	case 127:
		if len(b) < 10 {
			return h, 0, false
		}
		// Beyond any limit; clamping keeps int conversions safe.
		h.Length = int64(min(binary.BigEndian.Uint64(b[2:]), math.MaxInt32))
		hlen = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < hlen+4 {
			return h, 0, false
		}
		copy(h.Mask[:], b[hlen:])
		hlen += 4
	}
	return h, hlen, true
}

// checkHeader applies RFC 6455 and our limits to a client frame's header
// alone, so an oversize frame is refused before its payload is read.
// fragmented says a text message is open, of before bytes so far; maxMsg
// bounds a text message (all its fragments). It returns nil or why to close.
//
// ws.CheckHeader does the protocol part. It reports a binary frame inside a
// fragmented message as a missing continuation (1002); the contract wants
// every client binary frame refused with 1003, so that one is told apart.
// A header with several faults gets the reason of the one ws.CheckHeader
// finds first; the code is the same.
func checkHeader(h ws.Header, fragmented bool, before, maxMsg int) *closeReason {
	st := ws.StateServerSide
	if fragmented {
		st = st.Set(ws.StateFragmented)
	}
	if err := ws.CheckHeader(h, st); err != nil {
		if err == ws.ErrProtocolContinuationExpected && h.OpCode == ws.OpBinary {
			return closeBinary
		}
		return protocolReason(err)
	}
	switch h.OpCode {
	case ws.OpBinary:
		return closeBinary
	case ws.OpText, ws.OpContinuation:
		if uint64(h.Length) > uint64(maxMsg-before) {
			return closeMessageTooBig
		}
	}
	return nil
}

// protocolReason is the close reason of a ws.CheckHeader error.
func protocolReason(err error) *closeReason {
	switch err {
	case ws.ErrProtocolNonZeroRsv:
		return closeReservedBits
	case ws.ErrProtocolMaskRequired:
		return closeNotMasked
	case ws.ErrProtocolControlPayloadOverflow, ws.ErrProtocolControlNotFinal:
		return closeBadControl
	case ws.ErrProtocolOpCodeReserved:
		return closeUnknownOpcode
	case ws.ErrProtocolContinuationExpected:
		return closeTextInMessage
	case ws.ErrProtocolContinuationUnexpected:
		return closeContNoMessage
	}
	// A check newer than this list: still a protocol error.
	return &closeReason{code: CloseProtocolError, text: err.Error()}
}

// validCloseCode reports whether a peer may send code in a close frame.
// ws.CheckCloseFrameData decides, but for two ranges: 1012-1014 were
// registered with IANA after RFC 6455 and are valid (gobwas refuses them),
// and codes past 4999 lie outside every range of RFC 6455 §7.4.2 (gobwas
// lets them through). The reason text is not checked: the pool never reads
// it.
func validCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1012 && code <= 1014:
		return true
	case code > 4999:
		return false
	}
	return ws.CheckCloseFrameData(code, "") == nil
}

// closeFrame builds a server close frame; the reason is cut to fit a
// control frame.
func closeFrame(code ws.StatusCode, reason string) []byte {
	if len(reason) > ws.MaxControlFramePayloadSize-2 {
		reason = reason[:ws.MaxControlFramePayloadSize-2]
	}
	b := make([]byte, 4+len(reason))
	b[0] = 0x80 | byte(ws.OpClose)
	b[1] = byte(2 + len(reason))
	ws.PutCloseFrameBody(b[2:], code, reason)
	return b
}

// appendPong appends an unmasked pong carrying a client ping's masked
// payload (at most 125 bytes: checkHeader saw to it).
func appendPong(dst, payload []byte, mask [4]byte) []byte {
	dst = append(dst, 0x80|byte(ws.OpPong), byte(len(payload)))
	n := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[n:], mask, 0)
	return dst
}

// peerCloseCode is the code of a client close frame's masked payload, which
// holds at least two bytes.
func peerCloseCode(payload []byte, mask [4]byte) ws.StatusCode {
	b := [2]byte{payload[0], payload[1]}
	ws.Cipher(b[:], mask, 0)
	return ws.StatusCode(binary.BigEndian.Uint16(b[:]))
}
