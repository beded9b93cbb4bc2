package wspool

// The reading side of a connection's job: read what the socket holds, and
// handle complete client frames (frame.go checks them).

import (
	"syscall"

	"github.com/gobwas/ws"
)

// maxReadsPerPass bounds the reads of one pass (edge-triggered: a pass that
// stops before EAGAIN schedules another).
const maxReadsPerPass = 4

// maxCtrlBytes bounds queued pongs of a client that pings faster than it
// reads; further pings are not answered (RFC 6455 allows answering only the
// last one).
const maxCtrlBytes = 1024

// readFrames reads what the socket holds (bounded) and handles complete
// client frames. It reports false on EOF or a read error.
func (c *Conn) readFrames(w *worker, now int64) bool {
	for i := 0; i < maxReadsPerPass; i++ {
		n, e := sysRead(c.fd, w.rbuf)
		switch {
		case e == syscall.EAGAIN:
			return true
		case e == syscall.EINTR:
			continue
		case e != 0 || n <= 0:
			return false
		}
		c.lastRead.Store(now)
		if c.kind != kindWS || c.closing || c.closeReq.Load() != nil {
			continue // discard: not frames, or we are closing
		}
		c.consume(w.rbuf[:n], c.s.cfg.MaxMessageBytes)
	}
	c.state.Or(stRead) // edge-triggered: come back for the rest
	return true
}

// consume handles newly read bytes after any partial frame kept from the
// last read; the incomplete tail is copied (the read buffer belongs to the
// worker) and kept until the next read.
func (c *Conn) consume(data []byte, maxMsg int) {
	if c.io != nil && len(c.io.partial) > 0 {
		c.io.partial = append(c.io.partial, data...)
		data = c.io.partial
	}
	used := c.handleFrames(data, maxMsg)
	if rest := data[used:]; len(rest) > 0 && c.closeReq.Load() == nil {
		p := make([]byte, len(rest), max(len(rest), 256))
		copy(p, rest)
		c.ioState().partial = p
	} else if c.io != nil {
		c.io.partial = nil
		c.releaseIO()
	}
}

// handleFrames consumes the complete client frames at the start of data and
// returns how many bytes it used. It queues pongs and close replies in ctrl
// and records protocol violations as a close request. maxMsg bounds a text
// message (all its fragments).
func (c *Conn) handleFrames(data []byte, maxMsg int) int {
	off := 0
	for c.closeReq.Load() == nil {
		h, hlen, ok := parseHeader(data[off:])
		if !ok {
			return off
		}
		// The header is checked again when more bytes arrive, so the check
		// changes nothing.
		if r := checkHeader(h, c.inMsg(), c.msgLenBefore(h), maxMsg); r != nil {
			c.closeReq.CompareAndSwap(nil, r)
			return len(data)
		}
		end := off + hlen + int(h.Length)
		if end > len(data) {
			return off
		}
		payload := data[off+hlen : end]
		switch h.OpCode {
		case ws.OpPing:
			if x := c.ioState(); len(x.ctrl)+2+len(payload) <= maxCtrlBytes {
				x.ctrl = appendPong(x.ctrl, payload, h.Mask)
			}
		case ws.OpClose:
			c.peerClosed = true
			c.closeReq.CompareAndSwap(nil, closeReply(payload, h.Mask))
		case ws.OpText, ws.OpContinuation:
			// Only a single-frame message may be a token refresh; other
			// client text is ignored (contract).
			if h.OpCode == ws.OpText && h.Fin {
				c.onClientText(payload, h.Mask)
			}
			if !h.Fin || c.inMsg() {
				x := c.ioState()
				x.msgLen = c.msgLenBefore(h) + int(h.Length)
				x.inMsg = !h.Fin
				if h.Fin {
					x.msgLen = 0
				}
			}
		}
		off = end
	}
	return len(data)
}

// closeReply is our answer to a client close frame's masked payload: its
// code echoed, or 1002 for a bad one.
func closeReply(payload []byte, mask [4]byte) *closeReason {
	switch len(payload) {
	case 0:
		return closeNormal
	case 1:
		return closeBadCloseFrame
	}
	switch code := peerCloseCode(payload, mask); {
	case !validCloseCode(code):
		return closeBadCloseCode
	case code == CloseNormal:
		return closeNormal
	default:
		return &closeReason{code: code}
	}
}

// inMsg reports whether the client is inside a fragmented text message.
func (c *Conn) inMsg() bool { return c.io != nil && c.io.inMsg }

// msgLenBefore is the size of the message h continues.
func (c *Conn) msgLenBefore(h ws.Header) int {
	if h.OpCode == ws.OpContinuation && c.io != nil {
		return c.io.msgLen
	}
	return 0
}
