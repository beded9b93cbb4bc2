//go:build linux

package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// The bench shares the machine's cores with the bridge it measures, so its
// CPU per frame is part of every latency it reports. A goroutine per
// connection over net.Conn costs, per frame, a read returning the data, a
// read returning EAGAIN, a goroutine park and a netpoll wakeup, and every
// delivery took the process's one latency lock. Here a few epoll loops own
// raw descriptors: one read per ready connection into a large buffer, no
// goroutine per connection, and each loop records into histograms of its
// own, merged when the set finishes.

// epollIO is a set's loops; a client always goes to the same loop, so a
// reconnect keeps its counters where they were.
type epollIO struct {
	loops []*epLoop
}

// clientsPerLoop and maxLoops: 10k clients on 2 cores gave the lowest
// latencies with 4 loops in all (the wspool benchmarks' client, 82–94 ms
// p99 against 108–116 with 2 and 145–158 with 1); the bench spreads 10k
// over two processes, so 2 loops each. NB_BENCH_CLIENT_LOOPS overrides;
// NB_BENCH_CLIENT=goroutine brings back the goroutine-per-connection client.
const (
	clientsPerLoop = 2500
	maxLoops       = 4
	loopBufSize    = 256 << 10 // a read that does not fill it drained the socket
)

func newClientIO(count int, phase *atomic.Int32) clientIO {
	if os.Getenv("NB_BENCH_CLIENT") == "goroutine" {
		return newGoroutineIO(phase)
	}
	n := min(maxLoops, max(1, (count+clientsPerLoop-1)/clientsPerLoop))
	if v, err := strconv.Atoi(os.Getenv("NB_BENCH_CLIENT_LOOPS")); err == nil && v > 0 {
		n = v
	}
	e := &epollIO{}
	for range n {
		l, err := newLoop()
		if err != nil {
			// Out of descriptors for an epoll set is out of them for
			// clients too; the goroutine client reports that per dial.
			fmt.Fprintln(os.Stderr, "bench: epoll:", err, "(reading with a goroutine per connection)")
			for _, l := range e.loops {
				l.halt()
			}
			return newGoroutineIO(phase)
		}
		l.live.phase = phase
		e.loops = append(e.loops, l)
		go l.run()
	}
	return e
}

func (e *epollIO) attach(c *wsClient, conn net.Conn, br *bufio.Reader) error {
	return e.loops[c.user%len(e.loops)].attach(c, conn, br)
}

func (e *epollIO) received() int64 {
	var n int64
	for _, l := range e.loops {
		n += l.recv.Load()
	}
	return n
}

func (e *epollIO) merged() mergedLatency {
	var m mergedLatency
	sinks := make([]*latencySink, 0, len(e.loops))
	for _, l := range e.loops {
		l.live.mu.Lock()
		m.live.merge(&l.live.hist)
		for i := range m.phases {
			m.phases[i].merge(&l.live.phases[i])
		}
		l.live.mu.Unlock()
		l.replay.mu.Lock()
		m.replay.merge(&l.replay.hist)
		l.replay.mu.Unlock()
		sinks = append(sinks, &l.live)
	}
	m.chart = mergeReservoirs(sinks)
	return m
}

func (e *epollIO) stop() {
	for _, l := range e.loops {
		l.halt()
	}
}

// mergeReservoirs draws one uniform reservoir from the loops' reservoirs:
// from each, a share of reservoirSize in proportion to the deliveries it saw.
func mergeReservoirs(sinks []*latencySink) []sample {
	var total int64
	for _, s := range sinks {
		s.mu.Lock()
		total += s.hist.N
		s.mu.Unlock()
	}
	var out []sample
	rng := rand.New(rand.NewPCG(uint64(total), 13))
	for _, s := range sinks {
		s.mu.Lock()
		k := len(s.samples)
		if total > reservoirSize {
			k = min(k, int(int64(reservoirSize)*s.hist.N/total))
		}
		picked := slices.Clone(s.samples)
		s.mu.Unlock()
		rng.Shuffle(len(picked), func(i, j int) { picked[i], picked[j] = picked[j], picked[i] })
		out = append(out, picked[:k]...)
	}
	return out
}

// epLoop reads its connections with one epoll set, edge-triggered.
type epLoop struct {
	epfd int
	buf  []byte

	mu      sync.Mutex // held by the loop per batch of events, and by attach
	conns   []*epConn  // by the slot in the epoll event; nil once ended; slots are not reused
	halted  bool       // mu
	stopped atomic.Bool
	exited  chan struct{}

	live, replay latencySink // this loop's deliveries: no lock shared with other loops
	recv         atomic.Int64
}

// epConn is one connection of a client. fd changes (to -1, closed) only on
// the loop, under c.wmu; others read it under c.wmu.
type epConn struct {
	c      *wsClient
	fd     int
	hungUp atomic.Int64  // unix ns of our hangup; 0 before
	rest   []byte        // an incomplete frame kept for the next read
	msg    []byte        // a fragmented message being collected
	done   chan struct{} // the client's done of this connection
}

func newLoop() (*epLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &epLoop{epfd: epfd, buf: make([]byte, loopBufSize), exited: make(chan struct{})}, nil
}

// attach takes the socket out of Go's netpoller (a descriptor of its own,
// the net.Conn closed: two epoll sets on one socket would each wake per
// frame), handles what the handshake read ahead, and registers it.
func (l *epLoop) attach(c *wsClient, conn net.Conn, br *bufio.Reader) error {
	fd, err := takeFD(conn)
	if err != nil {
		return err
	}
	ec := &epConn{c: c, fd: fd, done: c.done}
	c.received, c.replayed = &l.recv, &l.replay
	c.hangup = func(sendClose bool) { ec.hangup(sendClose && !c.sse) }
	c.send = func(msg []byte) { ec.write(textFrame(msg)) }
	if br != nil && br.Buffered() > 0 {
		// Frames already read (caught_up follows the 101 at once) are
		// handled here: the loop does not know the connection yet.
		b, _ := br.Peek(br.Buffered())
		used, code, ok := l.parse(ec, slices.Clone(b), time.Now().UnixMicro())
		if !ok {
			ec.end(code)
			return nil
		}
		ec.rest = slices.Clone(b[used:])
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.halted {
		_ = unix.Close(fd)
		return errors.New("client loop stopped")
	}
	slot := len(l.conns)
	l.conns = append(l.conns, ec)
	// Bytes that arrived since raise an event at once: epoll checks
	// readiness when a descriptor is added.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(slot)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.conns[slot] = nil
		_ = unix.Close(fd)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

func takeFD(conn net.Conn) (int, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return -1, errors.New("connection has no descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	// The duplicate shares the open file, which Go made non-blocking.
	_ = conn.Close()
	return fd, nil
}

func (l *epLoop) run() {
	defer close(l.exited)
	events := make([]unix.EpollEvent, 1024)
	lastSweep := time.Now()
	for !l.stopped.Load() {
		// A timeout, so halt needs no wakeup descriptor: a stopped loop
		// exits within 100 ms.
		n, err := unix.EpollWait(l.epfd, events, 100)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: epoll_wait:", err)
			break
		}
		l.mu.Lock()
		for i := range events[:n] {
			slot := events[i].Fd
			hup := events[i].Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
			if ec := l.conns[slot]; ec != nil && !l.readConn(ec, hup) {
				l.conns[slot] = nil
			}
		}
		if now := time.Now(); now.Sub(lastSweep) >= time.Second {
			l.sweep(now)
			lastSweep = now
		}
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.halted = true
	for i, ec := range l.conns {
		if ec != nil {
			ec.end(0) // nothing reads it any more: its client must see it down
			l.conns[i] = nil
		}
	}
	l.mu.Unlock()
	_ = unix.Close(l.epfd)
}

// hangupGrace: a connection we hung up that the loop has not seen end
// within it is ended anyway, so close never waits for a peer that went
// silent (its stats would be lost with the whole set's).
const hangupGrace = 2 * time.Second

// sweep ends the connections hung up more than hangupGrace ago; l.mu held.
func (l *epLoop) sweep(now time.Time) {
	for i, ec := range l.conns {
		if ec != nil {
			if at := ec.hungUp.Load(); at != 0 && now.UnixNano()-at > int64(hangupGrace) {
				ec.end(0)
				l.conns[i] = nil
			}
		}
	}
}

// halt stops the loop and waits for it; its clients are closed by then.
func (l *epLoop) halt() {
	if l.stopped.Swap(true) {
		return
	}
	<-l.exited
}

// readConn reads until the socket is drained (edge-triggered: a short read
// emptied the receive queue, and a later arrival raises a new edge). After
// a hangup (hup: the peer's FIN, our shutdown, an error) no edge follows,
// so it reads on until the read that reports the end. It returns false
// once the connection has ended.
func (l *epLoop) readConn(ec *epConn, hup bool) bool {
	for {
		n, err := unix.Read(ec.fd, l.buf)
		switch {
		case err == unix.EAGAIN:
			return true
		case err == unix.EINTR:
			continue
		case err != nil || n == 0:
			ec.end(0)
			return false
		}
		now := time.Now().UnixMicro()
		data, kept := l.buf[:n], len(ec.rest) > 0
		if kept {
			ec.rest = append(ec.rest, data...)
			data = ec.rest
		}
		used, code, ok := l.parse(ec, data, now)
		if !ok {
			ec.end(code)
			return false
		}
		if kept {
			ec.rest = ec.rest[:copy(ec.rest, data[used:])]
			if cap(ec.rest) > 64<<10 && len(ec.rest) == 0 {
				ec.rest = nil // a large frame passed: do not hold its buffer
			}
		} else if used < len(data) {
			ec.rest = append(ec.rest[:0], data[used:]...)
		}
		if n < len(l.buf) && !hup {
			return true
		}
	}
}

// parse hands p to the connection's transport: WebSocket frames or SSE.
func (l *epLoop) parse(ec *epConn, p []byte, now int64) (used, code int, ok bool) {
	if ec.c.sse {
		return sseEvents(ec.c, p, now, &l.live)
	}
	return l.frames(ec, p, now)
}

// frames handles the complete frames at the start of p, received at now,
// and returns the bytes they used; ok false when the connection ended (a
// close frame: code is its code).
func (l *epLoop) frames(ec *epConn, p []byte, now int64) (used, code int, ok bool) {
	c := ec.c
	off := 0
	for {
		b := p[off:]
		if len(b) < 2 {
			return off, 0, true
		}
		fin, op := b[0]&0x80 != 0, ws.OpCode(b[0]&0x0F)
		masked, hl, pl := b[1]&0x80 != 0, 2, uint64(b[1]&0x7F)
		switch pl {
		case 126:
			if len(b) < 4 {
				return off, 0, true
			}
			hl, pl = 4, uint64(binary.BigEndian.Uint16(b[2:]))
		case 127:
			if len(b) < 10 {
				return off, 0, true
			}
			hl, pl = 10, binary.BigEndian.Uint64(b[2:])
			if pl > 1<<30 {
				return off, 0, false // no bridge sends that
			}
		}
		var mask [4]byte
		if masked {
			if len(b) < hl+4 {
				return off, 0, true
			}
			copy(mask[:], b[hl:])
			hl += 4
		}
		if uint64(len(b)) < uint64(hl)+pl {
			return off, 0, true
		}
		payload := b[hl : hl+int(pl)]
		off += hl + int(pl)
		if masked {
			ws.Cipher(payload, mask, 0)
		}
		switch op {
		case ws.OpPing:
			// Browsers answer pings; so do we, or the bridge closes us as
			// silent. A zero mask key leaves the payload as it is.
			pong := append([]byte{0x80 | byte(ws.OpPong), 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
			ec.write(pong)
			continue
		case ws.OpClose:
			code := 0
			if len(payload) >= 2 {
				code = int(binary.BigEndian.Uint16(payload))
			}
			return off, code, false
		case ws.OpText, ws.OpContinuation:
		default:
			continue
		}
		if !fin || len(ec.msg) > 0 { // fragmented: collect until the last frame
			ec.msg = append(ec.msg, payload...)
			if !fin {
				continue
			}
			payload, ec.msg = ec.msg, ec.msg[:0]
		}
		c.frameAt(payload, now, &l.live)
	}
}

// write sends a small frame (a pong, our close, a token) whole or not at all.
func (ec *epConn) write(frame []byte) {
	ec.c.wmu.Lock()
	if ec.fd >= 0 {
		_, _ = unix.Write(ec.fd, frame)
	}
	ec.c.wmu.Unlock()
}

// hangup, from any goroutine: our close frame, then a shutdown that the
// loop sees as the end of the connection. Only the loop closes the
// descriptor, so it is never closed under a read nor reused while named.
func (ec *epConn) hangup(sendClose bool) {
	ec.c.wmu.Lock()
	if ec.fd >= 0 {
		if sendClose {
			_, _ = unix.Write(ec.fd, closeFrame())
		}
		_ = unix.Shutdown(ec.fd, unix.SHUT_RDWR)
		ec.hungUp.Store(time.Now().UnixNano())
	}
	ec.c.wmu.Unlock()
}

// end records how the connection ended, closes the descriptor (which
// leaves the epoll set: nothing else shares the socket) and lets the
// client know. On the loop only, or before the loop knew the connection.
func (ec *epConn) end(code int) {
	ec.c.ended(code)
	ec.c.wmu.Lock()
	if ec.fd >= 0 {
		_ = unix.Close(ec.fd)
		ec.fd = -1
	}
	ec.c.wmu.Unlock()
	ec.rest, ec.msg = nil, nil
	close(ec.done)
}
