package wspool

// The connection's state machine: its state bits, what a job does with
// them, and its end. The reading side is read.go, the writing side
// write.go, the timer's decisions timers.go, the socket calls sys_*.go.

import (
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
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

// Conn is one upgraded WebSocket connection. Between the upgrade and
// Source.Closed the core may call Wake and Close from any goroutine; neither
// blocks. Everything else is owned by the job currently holding stSched.
type Conn struct {
	// Fields are ordered to leave no padding holes: 128 bytes, a size class
	// of its own (it was 200 before the rarely used buffers moved to
	// connIO, and 240 with a net.Conn and int fields).
	s        *Server
	src      Source
	ip       ipKey                       // no string per connection; RemoteIP formats it
	closeReq atomic.Pointer[closeReason] // first request wins

	tok        atomic.Pointer[tokenState] // token expiry and identity (refresh.go); nil: none
	lastRead   atomic.Int64               // unix ns of the last byte read
	stallSince atomic.Int64               // unix ns of the last progress while bytes are pending; 0: none pending
	graceUntil atomic.Int64               // set once our close frame is out

	nextPing int64 // timer loop only
	tDue     int64 // timers.mu

	fd    int32 // our own descriptor (a duplicate; the net.Conn is closed at registration)
	state atomic.Uint32
	tIdx  int32 // timers.mu

	// Owned by the running job.
	sentCode    ws.StatusCode // code of our close frame
	pingDue     bool
	draining    bool
	io          *connIO // nil while there is nothing half done: most of the time
	closeQueued bool    // our close frame is in ctrl or pending
	closing     bool    // our close frame is out; waiting for the peer
	peerClosed  bool    // the peer sent a close frame
	// Set before registration; in the padding above, so Conn stays 128.
	kind      connKind // WebSocket, SSE or poll
	heartbeat bool     // WebSocket heartbeat=1: a {"control":"ping"} with each ping
}

// connIO is what a connection holds only while a write or a read is half
// done: an idle connection does not carry it. Owned by the running job.
type connIO struct {
	pending [][]byte   // unwritten rest of the last writev
	ctrl    []byte     // pongs to send before pulling
	partial []byte     // an incomplete client frame
	msgLen  int        // bytes of the fragmented message so far
	inMsg   bool       // inside a fragmented text message
	poll    *pollState // a poll until it is answered
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
	if x := c.io; x != nil && x.pending == nil && x.ctrl == nil && x.partial == nil && !x.inMsg && x.poll == nil {
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
	c.requestClose(&closeReason{code: ws.StatusCode(code), text: reason}, 0)
}

// RemoteIP is the client's IP address as the socket sees it.
func (c *Conn) RemoteIP() string { return c.ip.String() }

// schedule sets bits and queues the connection unless it is queued, running
// or dead; the push never blocks.
func (c *Conn) schedule(bits uint32) {
	if old := c.state.Or(bits | stSched); old&(stSched|stDead) == 0 {
		c.s.runq.push(c)
	}
}

// requestClose sets r as the connection's close reason unless one is set,
// and schedules the close with bits; the job writes it after what is ready.
func (c *Conn) requestClose(r *closeReason, bits uint32) {
	c.closeReq.CompareAndSwap(nil, r)
	c.schedule(bits | stCloseReq)
}

// process handles one set of bits; it reports false once torn down.
func (c *Conn) process(w *worker, bits uint32) bool {
	cfg := &c.s.cfg
	var now int64 // unix ns; read only when needed: a plain delivery does not
	if bits&^(stWake|stWrite) != 0 {
		now = time.Now().UnixNano()
	}
	if bits&stKill != 0 {
		c.teardown(closeAbnormal, true)
		return false
	}
	if c.closing {
		if bits&stRead != 0 && !c.read(w, now) {
			c.teardown(c.sentCode, false)
			return false
		}
		if bits&stGrace != 0 && now >= c.graceUntil.Load() {
			c.teardown(c.sentCode, false)
			return false
		}
		return true
	}
	if bits&stRead != 0 && !c.read(w, now) {
		c.teardown(closeAbnormal, false)
		return false
	}
	// SSE and poll clients send nothing once their request is in: silence
	// says nothing of them (a dead one is found by its writes).
	if bits&stSilent != 0 && c.kind == kindWS && now-c.lastRead.Load() >= 2*int64(cfg.PingInterval) {
		// A silent peer would not read a close frame either.
		c.teardown(closeAbnormal, true)
		return false
	}
	if bits&stExpire != 0 {
		c.closeReq.CompareAndSwap(nil, closeTokenExpired)
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

// read reads the socket; only a WebSocket's client frames are handled, what
// an SSE or poll client sends after its request (nothing, normally) is
// dropped, and EOF is how a client that went away ends its stream.
func (c *Conn) read(w *worker, now int64) bool { return c.readFrames(w, now) }

// enterClosing runs once our close frame is fully written: half-close, and
// wait briefly for the peer's close (or at once when it already sent one).
func (c *Conn) enterClosing(now int64) {
	c.closing = true
	sysShutdownWrite(c.fd)
	if c.peerClosed {
		c.graceUntil.Store(now)
		c.state.Or(stGrace)
		return
	}
	g := now + int64(c.s.cfg.CloseGrace)
	c.graceUntil.Store(g)
	c.s.timers.set(c, g)
}

// teardown closes the socket and tells the core; only the job calls it.
// code is what Hooks.ConnClosed reports.
func (c *Conn) teardown(code ws.StatusCode, reset bool) {
	c.state.Store(stDead | stSched)
	s := c.s
	s.poller.remove(c)
	s.timers.remove(c)
	// reset: an RST frees the socket's buffers at once instead of lingering
	// on a peer that does not read.
	sysClose(c.fd, reset)
	if c.src != nil {
		c.src.Closed()
	}
	c.io = nil
	s.connGone(c, code)
}
