//go:build linux

package wspool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// The benchmarks' load generator shares the machine's cores with the pool
// under test, so its CPU per frame is part of every latency it reports. A
// goroutine per connection over net.Conn cost about as much as the server:
// per frame a read returning the data, a read returning EAGAIN, a goroutine
// park and a netpoll wakeup. Here a few epoll loops own raw descriptors:
// one read per ready connection into a large buffer, no goroutine per
// connection, no lock per frame.

// benchConn is one client connection, owned by one loop.
type benchConn struct {
	fd   int32
	dead bool
	cnt  int64  // timestamped text frames received; loop.mu
	rest []byte // an incomplete frame kept for the next read
}

type clientLoop struct {
	epfd  int
	conns []*benchConn // by the index carried in the epoll event

	mu     sync.Mutex // held while a batch of events is handled
	lat    []int64    // receive − publish, ns; mu
	ended  int        // connections closed by the server or an error; mu
	reason string     // why the first one ended; mu
}

// clientBufSize is the read buffer of a loop: a read that does not fill it
// has drained the socket.
const clientBufSize = 256 << 10

func newClientLoop() (*clientLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &clientLoop{epfd: epfd}, nil
}

// add registers a connected socket; rest is what the handshake reader
// already buffered past the 101 response. Called before run starts.
func (l *clientLoop) add(fd int, rest []byte) error {
	c := &benchConn{fd: int32(fd), rest: rest}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(len(l.conns))}
	l.conns = append(l.conns, c)
	// Already readable bytes raise an event at once (epoll checks readiness
	// on insertion), so nothing that arrived before is missed.
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

func (l *clientLoop) run() {
	events := make([]unix.EpollEvent, 1024)
	buf := make([]byte, clientBufSize)
	var pong []byte
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "client epoll_wait:", err)
			return
		}
		l.mu.Lock()
		for i := range events[:n] {
			c := l.conns[events[i].Fd]
			if !c.dead {
				pong = l.readConn(c, buf, pong)
			}
		}
		l.mu.Unlock()
	}
}

// readConn reads until the socket is drained (edge-triggered): a read that
// returns less than it asked for found the receive queue empty, and any
// later arrival raises a new edge.
func (l *clientLoop) readConn(c *benchConn, buf, pong []byte) []byte {
	for {
		r := copy(buf, c.rest)
		n, err := unix.Read(int(c.fd), buf[r:])
		switch {
		case err == unix.EAGAIN:
			return pong
		case err == unix.EINTR:
			continue
		case err != nil:
			l.end(c, err.Error())
			return pong
		case n == 0:
			l.end(c, "EOF")
			return pong
		}
		data := buf[:r+n]
		used, p, why := l.frames(c, data, time.Now().UnixNano(), pong)
		pong = p
		if why != "" {
			l.end(c, why)
			return pong
		}
		c.rest = append(c.rest[:0], data[used:]...)
		if len(c.rest) == len(buf) {
			l.end(c, "frame larger than the read buffer")
			return pong
		}
		if r+n < len(buf) {
			return pong
		}
	}
}

// frames handles the complete server frames at the start of p and returns
// how many bytes they used, or why the connection must end.
func (l *clientLoop) frames(c *benchConn, p []byte, now int64, pong []byte) (int, []byte, string) {
	off := 0
	for {
		b := p[off:]
		if len(b) < 2 {
			return off, pong, ""
		}
		if b[1]&0x80 != 0 {
			return off, pong, "masked server frame"
		}
		op, hl, pl := ws.OpCode(b[0]&0x0F), 2, uint64(b[1]&0x7F)
		switch pl {
		case 126:
			if len(b) < 4 {
				return off, pong, ""
			}
			hl, pl = 4, uint64(binary.BigEndian.Uint16(b[2:]))
		case 127:
			if len(b) < 10 {
				return off, pong, ""
			}
			hl, pl = 10, binary.BigEndian.Uint64(b[2:])
			if pl > clientBufSize {
				return off, pong, "frame too large"
			}
		}
		if uint64(len(b)) < uint64(hl)+pl {
			return off, pong, ""
		}
		payload := b[hl : hl+int(pl)]
		switch {
		case op == ws.OpText && b[0]&0x80 != 0:
			if ts, ok := frameTime(payload); ok {
				l.lat = append(l.lat, now-ts)
				c.cnt++
			}
		case op == ws.OpPing:
			// Browsers answer pings; so do we, or the pool would close us
			// as silent after two ping intervals. A zero mask key leaves
			// the payload as it is.
			pong = append(pong[:0], 0x80|byte(ws.OpPong), 0x80|byte(len(payload)), 0, 0, 0, 0)
			pong = append(pong, payload...)
			if _, err := unix.Write(int(c.fd), pong); err != nil {
				return off, pong, "pong: " + err.Error()
			}
		case op == ws.OpClose:
			return off, pong, "close frame"
		default:
			return off, pong, "unexpected opcode " + strconv.Itoa(int(op))
		}
		off += hl + int(pl)
	}
}

// frameTime parses the publish time from a payload starting {"t":<ns>,.
func frameTime(p []byte) (int64, bool) {
	const prefix = `{"t":`
	if len(p) < len(prefix) || string(p[:len(prefix)]) != prefix {
		return 0, false
	}
	var ts int64
	i := len(prefix)
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		ts = ts*10 + int64(p[i]-'0')
	}
	return ts, i > len(prefix) && i < len(p) && p[i] == ','
}

func (l *clientLoop) end(c *benchConn, why string) {
	c.dead = true
	_ = unix.Close(int(c.fd)) // also leaves the epoll set: no other descriptor shares the socket
	c.rest = nil
	if l.ended == 0 {
		l.reason = why
	}
	l.ended++
}

// takeFD returns a descriptor of its own for the client's socket and closes
// the net.Conn, so Go's netpoller no longer watches the socket (two epoll
// sets on one socket would each be woken per frame).
func takeFD(c *client) (int, []byte, error) {
	var rest []byte
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		rest = slices.Clone(b)
	}
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return -1, nil, errors.New("no descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, nil, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, nil, err
	}
	if derr != nil {
		return -1, nil, derr
	}
	// The duplicate shares the open file, which Go made non-blocking.
	_ = c.nc.Close()
	return fd, rest, nil
}

// TestBenchClientHelper is the client process of the benchmarks. It opens
// NB_CONNS connections, prints "ready", then answers commands on stdin:
// cpu (its CPU time, ns), reset, count (timestamped frames received by all
// connections), stats (latency quantiles; connections that ended, which
// none should).
func TestBenchClientHelper(t *testing.T) {
	addr := os.Getenv("NB_BENCH_CLIENT")
	if addr == "" {
		t.Skip("client process of the benchmarks")
	}
	n := envInt("NB_CONNS", 10000)
	var loops []*clientLoop
	if os.Getenv("NB_NOREAD") == "1" {
		for i := 0; i < n; i++ {
			nc := dialNoRead(t, addr, "/ws?user=slow"+strconv.Itoa(i))
			defer nc.Close() // held open, never read, until stdin closes
		}
	} else {
		loops = openClients(t, addr, n)
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "cpu":
			fmt.Println(int64(cpuTime()))
		case "reset":
			for _, l := range loops {
				l.mu.Lock()
				l.lat = l.lat[:0]
				for _, c := range l.conns {
					c.cnt = 0
				}
				l.mu.Unlock()
			}
			fmt.Println("ok")
		case "count":
			var total int64
			for _, l := range loops {
				l.mu.Lock()
				for _, c := range l.conns {
					total += c.cnt
				}
				l.mu.Unlock()
			}
			fmt.Println(total)
		case "stats":
			var all []int64
			ended, reason := 0, ""
			for _, l := range loops {
				l.mu.Lock()
				all = append(all, l.lat...)
				if l.ended > 0 && ended == 0 {
					reason = l.reason
				}
				ended += l.ended
				l.mu.Unlock()
			}
			slices.Sort(all)
			gone := ""
			if ended > 0 {
				gone = fmt.Sprintf(" ENDED=%d (%s)", ended, reason)
			}
			if len(all) == 0 {
				fmt.Println("no samples" + gone)
				continue
			}
			q := func(p float64) time.Duration { return time.Duration(all[int(p*float64(len(all)-1))]) }
			fmt.Printf("samples=%d p50=%v p99=%v max=%v%s\n", len(all), q(0.5), q(0.99), time.Duration(all[len(all)-1]), gone)
		}
	}
	os.Exit(0) // the loops' goroutines are the process's; no leak check here
}

// openClients dials n connections and shares them among NB_CLIENT_LOOPS
// running epoll loops. The default of 4 gave the lowest latencies with 10k
// clients on 2 cores (p99 82–94 ms against 108–116 ms with 2 loops and
// 145–158 ms with 1; 8 and 16 were worse again): the loops' threads are
// what the kernel weighs against the pool's workers when it shares the
// cores, and a client that falls behind makes every frame wait in its
// socket.
func openClients(t *testing.T, addr string, n int) []*clientLoop {
	loops := make([]*clientLoop, min(envInt("NB_CLIENT_LOOPS", 4), n))
	for i := range loops {
		l, err := newClientLoop()
		if err != nil {
			t.Fatal(err)
		}
		loops[i] = l
	}
	type dialed struct {
		fd   int
		rest []byte
	}
	fds := make([]dialed, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var failed atomic.Value
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c := dialWS(t, addr, "/ws?user=c"+strconv.Itoa(i))
			if c.resp.StatusCode != 101 {
				failed.Store(fmt.Sprintf("status %d %q", c.resp.StatusCode, c.body))
				return
			}
			fd, rest, err := takeFD(c)
			if err != nil {
				failed.Store(err.Error())
				return
			}
			fds[i] = dialed{fd, rest}
		})
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatalf("dial: %v", f)
	}
	for i, d := range fds {
		if err := loops[i%len(loops)].add(d.fd, d.rest); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range loops {
		go l.run()
	}
	return loops
}
