package wspool

import (
	"encoding/binary"
	"math"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// State bits of a connection. Poller, timer loop, Wake and Close only set
// bits and schedule; the single job that holds stSched does all socket work,
// so the descriptor has one user at a time and is closed by that user.
const (
	stSched    uint32 = 1 << iota // queued or running on a worker
	stRead                        // readable edge (or more to read)
	stWrite                       // writable edge
	stWake                        // the source may have frames
	stPing                        // send a ping
	stExpire                      // token expired: close 1008
	stSlow                        // no write progress for write_timeout
	stSilent                      // peer silent for two ping intervals
	stCloseReq                    // a close was requested (closeReq is set)
	stDrain                       // server draining: write what is ready, then 1001
	stKill                        // close at TCP level now
	stGrace                       // our close frame is out; grace may be over
	stDead                        // torn down; never scheduled again
)

// maxPasses bounds the passes one job makes before it goes to the back of
// the run queue, so a busy connection cannot hold a worker.
const maxPasses = 8

// maxReadsPerPass bounds the reads of one pass (edge-triggered: a pass that
// stops before EAGAIN schedules another).
const maxReadsPerPass = 4

// maxCtrlBytes bounds queued pongs of a client that pings faster than it
// reads; further pings are not answered (RFC 6455 allows answering only the
// last one).
const maxCtrlBytes = 1024

var pingFrame = []byte{0x89, 0x00}

type closeReq struct {
	code   int
	reason string
}

// Conn is one upgraded WebSocket connection. Between the upgrade and
// Source.Closed the core may call Wake and Close from any goroutine; neither
// blocks. Everything else is owned by the job currently holding stSched.
type Conn struct {
	// Fields are ordered to leave no padding holes: 128 bytes, a size class
	// of its own (it was 200 before the rarely used buffers moved to
	// connIO, and 240 with a net.Conn and int fields).
	s        *Server
	src      Source
	ip       ipKey                    // no string per connection; RemoteIP formats it
	closeReq atomic.Pointer[closeReq] // first request wins

	expires    int64        // token expiry, unix ns (0: none); set before registration
	lastRead   atomic.Int64 // unix ns of the last byte read
	stallSince atomic.Int64 // unix ns of the last progress while bytes are pending; 0: none pending
	graceUntil atomic.Int64 // set once our close frame is out

	nextPing int64 // timer loop only
	tDue     int64 // timers.mu

	fd    int32 // our own descriptor (a duplicate; the net.Conn is closed at registration)
	state atomic.Uint32
	tIdx  int32 // timers.mu

	// Owned by the running job.
	sentCode    int32   // code of our close frame
	io          *connIO // nil while there is nothing half done: most of the time
	pingDue     bool
	draining    bool
	closeQueued bool // our close frame is in ctrl or pending
	closing     bool // our close frame is out; waiting for the peer
	peerClosed  bool // the peer sent a close frame
}

// connIO is what a connection holds only while a write or a read is half
// done: an idle connection does not carry it. Owned by the running job.
type connIO struct {
	pending [][]byte // unwritten rest of the last writev
	ctrl    []byte   // pongs to send before pulling
	partial []byte   // an incomplete client frame
	msgLen  int      // bytes of the fragmented message so far
	inMsg   bool     // inside a fragmented text message
}

// ioState returns the connection's connIO, making it when absent.
func (c *Conn) ioState() *connIO {
	if c.io == nil {
		c.io = &connIO{}
	}
	return c.io
}

// releaseIO drops the connIO once nothing in it is half done.
func (c *Conn) releaseIO() {
	if x := c.io; x != nil && x.pending == nil && x.ctrl == nil && x.partial == nil && !x.inMsg {
		c.io = nil
	}
}

// Wake says the source may have frames. It never blocks; a Wake while the
// connection is being drained causes one more pass.
func (c *Conn) Wake() { c.schedule(stWake) }

// Close closes the connection with a close frame carrying code and reason,
// after what is already being written. It never blocks; the first close
// requested wins.
func (c *Conn) Close(code int, reason string) {
	c.closeReq.CompareAndSwap(nil, &closeReq{code: code, reason: reason})
	c.schedule(stCloseReq)
}

// RemoteIP is the client's IP address as the socket sees it.
func (c *Conn) RemoteIP() string { return c.ip.String() }

// inMsg reports whether the client is inside a fragmented text message.
func (c *Conn) inMsg() bool { return c.io != nil && c.io.inMsg }

// schedule sets bits and queues the connection unless it is queued, running
// or dead; the push never blocks.
func (c *Conn) schedule(bits uint32) {
	if old := c.state.Or(bits | stSched); old&(stSched|stDead) == 0 {
		c.s.runq.push(c)
	}
}

// run is the job: it takes the bits, works, and returns when none are left.
func (c *Conn) run(w *worker) {
	for pass := 0; ; pass++ {
		bits := c.state.Swap(stSched) &^ stSched
		if bits == 0 {
			if c.state.CompareAndSwap(stSched, 0) {
				return
			}
			continue
		}
		if pass == maxPasses {
			c.state.Or(bits)
			c.s.runq.push(c)
			return
		}
		if !c.process(w, bits) {
			return
		}
	}
}

// process handles one set of bits; it reports false once torn down.
func (c *Conn) process(w *worker, bits uint32) bool {
	cfg := &c.s.cfg
	var now int64 // unix ns; read only when needed: a plain delivery does not
	if bits&^(stWake|stWrite) != 0 {
		now = time.Now().UnixNano()
	}
	if bits&stKill != 0 {
		c.teardown(1006, true)
		return false
	}
	if c.closing {
		if bits&stRead != 0 && !c.readFrames(w, now) {
			c.teardown(int(c.sentCode), false)
			return false
		}
		if bits&stGrace != 0 && now >= c.graceUntil.Load() {
			c.teardown(int(c.sentCode), false)
			return false
		}
		return true
	}
	if bits&stRead != 0 && !c.readFrames(w, now) {
		c.teardown(1006, false)
		return false
	}
	if bits&stSilent != 0 && now-c.lastRead.Load() >= 2*int64(cfg.PingInterval) {
		// A silent peer would not read a close frame either.
		c.teardown(1006, true)
		return false
	}
	if bits&stExpire != 0 {
		c.closeReq.CompareAndSwap(nil, &closeReq{code: ClosePolicy, reason: "token expired"})
	}
	if bits&stPing != 0 {
		c.pingDue = true
	}
	if bits&stDrain != 0 {
		c.draining = true
	}
	writable := bits&(stWrite|stSlow|stCloseReq|stExpire|stDrain) != 0
	if bits&stSlow != 0 {
		if st := c.stallSince.Load(); st != 0 && now-st >= int64(cfg.WriteTimeout) {
			return c.slowClose(w, now)
		}
	}
	return c.flush(w, writable, now)
}

// slowClose makes one last attempt to write what is pending plus a 1013
// close frame, and otherwise closes at TCP level.
func (c *Conn) slowClose(w *worker, now int64) bool {
	c.s.cfg.Hooks.SlowClosed("write_timeout")
	c.closeReq.CompareAndSwap(nil, &closeReq{code: CloseTryAgainLater, reason: "write timeout"})
	if !c.flush(w, true, now) {
		return false
	}
	if c.closing {
		return true
	}
	c.teardown(1006, true)
	return false
}

// flush writes pending bytes, control frames, then frames pulled from the
// source, with one writev per round; it never blocks. It reports false once
// torn down. now may be 0 (not read yet).
func (c *Conn) flush(w *worker, writable bool, now int64) bool {
	if c.io != nil && len(c.io.pending) > 0 && !writable {
		// Blocked on a full socket: only an EPOLLOUT edge (or a close)
		// makes trying again worthwhile, and pulling more would grow
		// pending without bound.
		return true
	}
	cfg := &c.s.cfg
	for round := 0; round < 4; round++ {
		bufs, hadPending := w.bufs[:0], false
		if x := c.io; x != nil {
			bufs = append(bufs, x.pending...)
			hadPending = len(x.pending) > 0
			x.pending = nil
		}
		cr := c.closeReq.Load()
		if c.pingDue && cr == nil {
			bufs = append(bufs, pingFrame)
		}
		c.pingDue = false
		if x := c.io; x != nil && x.ctrl != nil {
			bufs = append(bufs, x.ctrl)
			x.ctrl = nil
		}
		c.releaseIO()
		pulled, exhausted := false, false
		if !hadPending && !c.closeQueued && (cr == nil || c.draining) && c.src != nil {
			n0 := len(bufs)
			bufs = c.src.Pull(bufs, cfg.MaxWriteBatch)
			pulled = len(bufs) > n0
			size := 0
			for _, b := range bufs[n0:] {
				size += len(b)
			}
			exhausted = size < cfg.MaxWriteBatch
		}
		// The close frame goes right after what is being written, except in
		// a drain: there it waits until a pull finds the source empty, so
		// nothing the source still holds is dropped behind it.
		drainLeft := c.draining && hadPending && c.src != nil
		if cr != nil && !c.closeQueued && !pulled && !drainLeft {
			bufs = append(bufs, closeFrame(cr.code, cr.reason))
			c.closeQueued = true
			c.sentCode = int32(cr.code)
		}
		if len(bufs) == 0 {
			w.bufs = bufs
			return true
		}
		done, written, rest, err := w.writev(int(c.fd), bufs)
		if written > 0 {
			cfg.Hooks.FramesWritten(done, written)
		}
		if err != nil {
			clear(bufs)
			w.bufs = bufs[:0]
			cfg.Hooks.WriteError()
			c.teardown(1006, false)
			return false
		}
		if len(rest) > 0 {
			// Allocates only when the socket is full; the frames themselves
			// are shared and only resliced.
			c.ioState().pending = append([][]byte(nil), rest...)
			clear(bufs)
			w.bufs = bufs[:0]
			if now == 0 {
				now = time.Now().UnixNano()
			}
			if written > 0 || c.stallSince.Load() == 0 {
				c.stallSince.Store(now)
				c.s.timers.set(c, now+int64(cfg.WriteTimeout))
			}
			return true
		}
		clear(bufs)
		w.bufs = bufs[:0]
		if c.stallSince.Load() != 0 {
			c.stallSince.Store(0)
		}
		if c.closeQueued {
			if now == 0 {
				now = time.Now().UnixNano()
			}
			c.enterClosing(now)
			return true
		}
		if !pulled && !hadPending {
			return true
		}
		if pulled && exhausted && cr == nil {
			// A Pull that stopped short of maxBytes had nothing more;
			// whatever is added later comes with a Wake. Asking again would
			// cost every delivery a second Pull.
			return true
		}
	}
	// Budget spent and the source may hold more: another pass, later.
	c.state.Or(stWake)
	return true
}

// enterClosing runs once our close frame is fully written: half-close, and
// wait briefly for the peer's close (or at once when it already sent one).
func (c *Conn) enterClosing(now int64) {
	c.closing = true
	_ = unix.Shutdown(int(c.fd), unix.SHUT_WR)
	if c.peerClosed {
		c.graceUntil.Store(now)
		c.state.Or(stGrace)
		return
	}
	g := now + int64(c.s.cfg.CloseGrace)
	c.graceUntil.Store(g)
	c.s.timers.set(c, g)
}

// readFrames reads what the socket holds (bounded) and handles complete
// client frames. It reports false on EOF or a read error.
func (c *Conn) readFrames(w *worker, now int64) bool {
	for i := 0; i < maxReadsPerPass; i++ {
		r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(c.fd), uintptr(unsafe.Pointer(&w.rbuf[0])), uintptr(len(w.rbuf)))
		n := int(r)
		switch {
		case e == unix.EAGAIN:
			return true
		case e == unix.EINTR:
			continue
		case e != 0 || n <= 0:
			return false
		}
		c.lastRead.Store(now)
		if c.closing || c.closeReq.Load() != nil {
			continue // discard: we are closing
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
		h, ok := parseFrameHeader(data[off:])
		if !ok {
			return off
		}
		if code, why := c.checkFrame(h, maxMsg); code != 0 {
			c.closeReq.CompareAndSwap(nil, &closeReq{code: code, reason: why})
			return len(data)
		}
		end := off + h.hlen + int(h.plen)
		if end > len(data) {
			return off
		}
		payload := data[off+h.hlen : end]
		switch h.op {
		case opPing:
			if x := c.ioState(); len(x.ctrl)+2+len(payload) <= maxCtrlBytes {
				x.ctrl = append(x.ctrl, 0x80|opPong, byte(len(payload)))
				x.ctrl = appendUnmasked(x.ctrl, payload, h.mask)
			}
		case opClose:
			c.peerClosed = true
			code, why := CloseNormal, ""
			if len(payload) == 1 {
				code, why = CloseProtocolError, "bad close frame"
			} else if len(payload) >= 2 {
				var b [2]byte
				appendUnmasked(b[:0], payload[:2], h.mask)
				code = int(binary.BigEndian.Uint16(b[:]))
				if !validCloseCode(code) {
					code, why = CloseProtocolError, "bad close code"
				}
			}
			c.closeReq.CompareAndSwap(nil, &closeReq{code: code, reason: why})
		case opText, opCont:
			// Client text is not needed by the contract: ignored.
			if !h.fin || c.inMsg() {
				x := c.ioState()
				x.msgLen = c.msgLenBefore(h) + int(h.plen)
				x.inMsg = !h.fin
				if h.fin {
					x.msgLen = 0
				}
			}
		}
		off = end
	}
	return len(data)
}

// msgLenBefore is the size of the message h continues.
func (c *Conn) msgLenBefore(h frameHeader) int {
	if h.op == opCont && c.io != nil {
		return c.io.msgLen
	}
	return 0
}

// checkFrame applies RFC 6455 and our limits to a header without changing
// any state (the header is parsed again when more bytes arrive); it returns
// a close code and reason, or 0.
func (c *Conn) checkFrame(h frameHeader, maxMsg int) (int, string) {
	switch {
	case h.rsv != 0:
		return CloseProtocolError, "reserved bits set"
	case !h.masked:
		return CloseProtocolError, "client frame not masked"
	}
	switch h.op {
	case opPing, opPong, opClose:
		if !h.fin || h.plen > 125 {
			return CloseProtocolError, "bad control frame"
		}
		return 0, ""
	case opBinary:
		return CloseUnsupported, "binary frames not supported"
	case opText:
		if c.inMsg() {
			return CloseProtocolError, "text frame inside a fragmented message"
		}
	case opCont:
		if !c.inMsg() {
			return CloseProtocolError, "continuation without a message"
		}
	default:
		return CloseProtocolError, "unknown opcode"
	}
	// Checked on the header alone, so an oversize frame is refused before
	// its payload is read.
	if h.plen > uint64(maxMsg-c.msgLenBefore(h)) {
		return CloseTooBig, "message too big"
	}
	return 0, ""
}

func validCloseCode(code int) bool {
	switch {
	case code >= 3000 && code <= 4999:
		return true
	case code < 1000 || code > 1014:
		return false
	case code == 1004 || code == 1005 || code == 1006:
		return false
	}
	return true
}

const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

type frameHeader struct {
	fin    bool
	rsv    byte
	op     byte
	masked bool
	mask   [4]byte
	plen   uint64
	hlen   int
}

// parseFrameHeader parses the header at the start of b; ok is false while b
// is too short to hold it.
func parseFrameHeader(b []byte) (h frameHeader, ok bool) {
	if len(b) < 2 {
		return h, false
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = b[0] & 0x70
	h.op = b[0] & 0x0F
	h.masked = b[1]&0x80 != 0
	h.hlen = 2
	switch l := b[1] & 0x7F; l {
	case 126:
		if len(b) < 4 {
			return h, false
		}
		h.plen = uint64(binary.BigEndian.Uint16(b[2:]))
		h.hlen = 4
	case 127:
		if len(b) < 10 {
			return h, false
		}
		h.plen = binary.BigEndian.Uint64(b[2:])
		h.hlen = 10
		if h.plen > math.MaxInt32 {
			h.plen = math.MaxInt32 // beyond any limit; keeps int conversions safe
		}
	default:
		h.plen = uint64(l)
	}
	if h.masked {
		if len(b) < h.hlen+4 {
			return h, false
		}
		copy(h.mask[:], b[h.hlen:])
		h.hlen += 4
	}
	return h, true
}

func appendUnmasked(dst, p []byte, mask [4]byte) []byte {
	for i, x := range p {
		dst = append(dst, x^mask[i&3])
	}
	return dst
}

// closeFrame builds a server close frame; the reason is cut to fit a
// control frame (125 bytes).
func closeFrame(code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	b := make([]byte, 0, 4+len(reason))
	b = append(b, 0x80|opClose, byte(2+len(reason)))
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	return append(b, reason...)
}

// onTimer runs on the timer loop when c's check is due: it sets the bits of
// whatever is due and schedules the next check.
func (c *Conn) onTimer(now int64) {
	if c.state.Load()&stDead != 0 {
		return
	}
	cfg := &c.s.cfg
	var bits uint32
	next := int64(math.MaxInt64)
	if g := c.graceUntil.Load(); g != 0 {
		if now >= g {
			c.schedule(stGrace)
			return
		}
		c.s.timers.set(c, g)
		return
	}
	if c.expires != 0 {
		if now >= c.expires {
			bits |= stExpire
		} else {
			next = min(next, c.expires)
		}
	}
	if st := c.stallSince.Load(); st != 0 {
		if d := st + int64(cfg.WriteTimeout); now >= d {
			bits |= stSlow
		} else {
			next = min(next, d)
		}
	}
	if d := c.lastRead.Load() + 2*int64(cfg.PingInterval); now >= d {
		bits |= stSilent
	} else {
		next = min(next, d)
	}
	if now >= c.nextPing {
		bits |= stPing
		c.nextPing = now + int64(cfg.PingInterval)
	}
	next = min(next, c.nextPing)
	if bits != 0 {
		c.schedule(bits)
	}
	c.s.timers.set(c, next)
}

// teardown closes the socket and tells the core; only the job calls it.
func (c *Conn) teardown(code int, reset bool) {
	c.state.Store(stDead | stSched)
	s := c.s
	s.poller.remove(c)
	s.timers.remove(c)
	if reset {
		// RST frees the socket's buffers at once instead of lingering on a
		// peer that does not read.
		_ = unix.SetsockoptLinger(int(c.fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	_ = unix.Close(int(c.fd))
	if c.src != nil {
		c.src.Closed()
	}
	c.io = nil
	s.connGone(c, code)
}

// worker holds one pool goroutine's scratch buffers, reused for every job.
//
// Its reads and writes are raw system calls: the descriptors are
// non-blocking, so a call never waits, and the runtime's bookkeeping for a
// call that might (entersyscall/exitsyscall, which lets another goroutine
// have the P meanwhile) would only add to every delivery.
type worker struct {
	bufs [][]byte
	iov  []unix.Iovec
	rbuf []byte
}

const iovMax = 1024

func newWorker() *worker {
	return &worker{bufs: make([][]byte, 0, 256), iov: make([]unix.Iovec, 0, iovMax), rbuf: make([]byte, 8<<10)}
}

// writev writes bufs to the non-blocking fd with as few writev calls as the
// kernel takes. It returns how many buffers were completed, the bytes
// written, and the unwritten rest (resliced, never copied); EAGAIN is not an
// error.
func (w *worker) writev(fd int, bufs [][]byte) (done, written int, rest [][]byte, err error) {
	for len(bufs) > 0 {
		k := min(len(bufs), iovMax)
		iov := w.iov[:0]
		want := 0
		for _, b := range bufs[:k] {
			if len(b) == 0 {
				continue
			}
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
			want += len(b)
		}
		n := 0
		if want > 0 {
			r, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			clear(iov) // drop references to the frames
			switch e {
			case 0:
				n = int(r)
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return done, written, bufs, nil
			default:
				return done, written, bufs, e
			}
		}
		written += n
		short := n < want
		for n > 0 || (len(bufs) > 0 && len(bufs[0]) == 0) {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
				done++
			} else {
				bufs[0] = bufs[0][n:]
				n = 0
			}
		}
		if short {
			return done, written, bufs, nil
		}
	}
	return done, written, nil, nil
}
