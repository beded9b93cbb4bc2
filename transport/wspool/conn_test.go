//go:build linux

package wspool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestDeliverAndWake(t *testing.T) {
	h := newHarness(t, nil)
	c := mustDial(t, h.addr(), "/ws?user=alice&groups=a,b")
	a := h.conn("alice")
	if a.req.Identity.User != "alice" || strings.Join(a.req.Identity.Groups, ",") != "a,b" {
		t.Fatalf("identity %+v", a.req.Identity)
	}
	f1, f2 := textFrame(`{"id":"1-0"}`), textFrame(`{"id":"2-0"}`)
	a.src.push(f1, f2)
	a.req.Conn.Wake()
	c.expectText(t, `{"id":"1-0"}`)
	c.expectText(t, `{"id":"2-0"}`)
	// A large burst crosses several writev passes.
	big := textFrame(strings.Repeat("x", 1000))
	for i := 0; i < 500; i++ {
		a.src.push(big)
	}
	a.req.Conn.Wake()
	for i := 0; i < 500; i++ {
		c.expectText(t, strings.Repeat("x", 1000))
	}
	if f1[0] != 0x81 || !bytes.Equal(f1, textFrame(`{"id":"1-0"}`)) {
		t.Fatal("frame modified")
	}
	if n := h.hooks.frames.Load(); n < 502 {
		t.Fatalf("FramesWritten counted %d frames", n)
	}
	if a.req.Conn.RemoteIP() != "127.0.0.1" {
		t.Fatalf("RemoteIP %q", a.req.Conn.RemoteIP())
	}
	c.nc.Close()
	eventually(t, 2*time.Second, func() error {
		if a.src.closed.Load() != 1 {
			return fmt.Errorf("Closed called %d times", a.src.closed.Load())
		}
		return nil
	})
}

func TestWakeBeforeUpgradeIsServed(t *testing.T) {
	h := newHarness(t, func(cfg *Config) {
		acc := cfg.Accept
		cfg.Accept = func(r *Request) (Source, error) {
			src, err := acc(r)
			src.(*testSource).push(textFrame("early"))
			r.Conn.Wake()
			return src, err
		}
	})
	c := mustDial(t, h.addr(), "/ws?user=bob")
	c.expectText(t, "early")
}

func TestClientFrames(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.MaxMessageBytes = 100 })
	addr := h.addr()

	c := mustDial(t, addr, "/ws?user=p")
	c.send(t, ws.NewPingFrame([]byte("hi")))
	f, err := c.readFrame(t, 3*time.Second)
	if err != nil || f.Header.OpCode != ws.OpPong || string(f.Payload) != "hi" {
		t.Fatalf("pong: %v %v %q", err, f.Header.OpCode, f.Payload)
	}
	c.send(t, ws.NewTextFrame([]byte("ignored")))
	// Fragmented text within the limit is fine.
	c.send(t, ws.NewFrame(ws.OpText, false, []byte("part1")))
	c.send(t, ws.NewFrame(ws.OpContinuation, true, []byte("part2")))
	c.send(t, ws.NewPingFrame([]byte("again")))
	f, err = c.readFrame(t, 3*time.Second)
	if err != nil || string(f.Payload) != "again" {
		t.Fatalf("pong 2: %v %q", err, f.Payload)
	}
	c.send(t, ws.NewTextFrame(bytes.Repeat([]byte("x"), 101)))
	c.expectClose(t, CloseTooBig)

	c = mustDial(t, addr, "/ws?user=q")
	c.send(t, ws.NewFrame(ws.OpText, false, bytes.Repeat([]byte("x"), 60)))
	c.send(t, ws.NewFrame(ws.OpContinuation, true, bytes.Repeat([]byte("x"), 60)))
	c.expectClose(t, CloseTooBig)

	c = mustDial(t, addr, "/ws?user=r")
	c.send(t, ws.NewBinaryFrame([]byte{1, 2}))
	c.expectClose(t, CloseUnsupported)

	c = mustDial(t, addr, "/ws?user=s")
	ws.WriteFrame(c.nc, ws.NewTextFrame([]byte("unmasked")))
	c.expectClose(t, CloseProtocolError)

	c = mustDial(t, addr, "/ws?user=u")
	c.send(t, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))
	c.expectClose(t, CloseNormal)
	_ = c.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.br.ReadByte(); err == nil {
		t.Fatal("connection still open after close handshake")
	}
	eventually(t, 3*time.Second, func() error {
		h.hooks.mu.Lock()
		defer h.hooks.mu.Unlock()
		got := fmt.Sprint(h.hooks.codes)
		for _, want := range []int{CloseTooBig, CloseUnsupported, CloseProtocolError, CloseNormal} {
			if !strings.Contains(got, fmt.Sprint(want)) {
				return fmt.Errorf("ConnClosed codes %s lack %d", got, want)
			}
		}
		return nil
	})
}

func TestKeepalive(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.PingInterval = 100 * time.Millisecond })
	addr := h.addr()
	live := mustDial(t, addr, "/ws?user=live")
	dead := mustDial(t, addr, "/ws?user=dead")
	// live answers pings; dead reads but never writes.
	deadline := time.Now().Add(600 * time.Millisecond)
	pings := 0
	for time.Now().Before(deadline) {
		f, err := live.readFrame(t, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if f.Header.OpCode == ws.OpPing {
			pings++
			live.send(t, ws.NewPongFrame(f.Payload))
		}
	}
	if pings < 3 {
		t.Fatalf("%d pings in 600ms", pings)
	}
	_ = dead.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := io.Copy(io.Discard, dead.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("silent peer not closed")
	}
	if h.s.Conns() != 1 {
		t.Fatalf("conns %d", h.s.Conns())
	}
}

type expiringAuth struct{ d time.Duration }

func (e expiringAuth) Authenticate(r *AuthRequest) (Identity, error) {
	id, err := NoneAuthenticator{}.Authenticate(r)
	id.Expires = time.Now().Add(e.d)
	return id, err
}

func TestTokenExpiryCloses1008(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.Auth = expiringAuth{300 * time.Millisecond} })
	c := mustDial(t, h.addr(), "/ws?user=a")
	start := time.Now()
	if r := c.expectClose(t, ClosePolicy); r != "token expired" {
		t.Fatalf("reason %q", r)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("closed too early: %v", d)
	}
}

func TestCoreClose(t *testing.T) {
	h := newHarness(t, nil)
	c := mustDial(t, h.addr(), "/ws?user=a")
	a := h.conn("a")
	a.src.push(textFrame("before"))
	a.req.Conn.Wake()
	c.expectText(t, "before")
	a.req.Conn.Close(CloseTryAgainLater, "fell out of the replay window")
	if r := c.expectClose(t, CloseTryAgainLater); r != "fell out of the replay window" {
		t.Fatalf("reason %q", r)
	}
	a.req.Conn.Wake() // after close: ignored, never blocks
	eventually(t, 3*time.Second, func() error {
		if a.src.closed.Load() != 1 {
			return errors.New("Closed not called")
		}
		return nil
	})
}

func TestStalledWriterClosedOthersContinue(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.WriteTimeout = 300 * time.Millisecond })
	addr := h.addr()
	// The stalled client has a tiny receive buffer and never reads.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET /ws?user=slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	slow := h.conn("slow")
	fast := mustDial(t, addr, "/ws?user=fast")
	fa := h.conn("fast")

	frame := textFrame(strings.Repeat("y", 60000))
	const n = 200 // 12 MB: more than any socket buffer holds
	for i := 0; i < n; i++ {
		slow.src.push(frame)
		fa.src.push(frame)
	}
	slow.req.Conn.Wake()
	fa.req.Conn.Wake()
	got := 0
	for got < n {
		f, err := fast.readFrame(t, 5*time.Second)
		if err != nil {
			t.Fatalf("fast client after %d frames: %v", got, err)
		}
		if f.Header.OpCode == ws.OpText {
			got++
		}
	}
	eventually(t, 5*time.Second, func() error {
		if h.hooks.slow.Load() != 1 || slow.src.closed.Load() != 1 {
			return fmt.Errorf("slow closes %d", h.hooks.slow.Load())
		}
		return nil
	})
	if fa.src.closed.Load() != 0 {
		t.Fatal("fast client closed")
	}
}

func TestDrain(t *testing.T) {
	h := newHarness(t, nil)
	c1 := mustDial(t, h.addr(), "/ws?user=a")
	c2 := mustDial(t, h.addr(), "/ws?user=b")
	a, b := h.conn("a"), h.conn("b")
	a.src.push(textFrame("last words"))
	b.src.push(textFrame("b1"), textFrame("b2"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.s.Drain(ctx) }()
	c1.expectText(t, "last words")
	c1.expectClose(t, CloseGoingAway)
	c2.expectText(t, "b1")
	c2.expectText(t, "b2")
	c2.expectClose(t, CloseGoingAway)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return")
	}
	checkRefused(t, dialWS(t, h.addr(), "/ws?user=c"), 503, "draining")
}

// A drain that starts while a connection's socket is full must still write
// everything its source holds before the close frame. (It used to queue the
// close right after the unsent rest of the last write, dropping the frames
// not yet pulled; TestDrainDeadlineKillsStalled caught it now and then.)
func TestDrainWritesEverythingAfterAFullSocket(t *testing.T) {
	h := newHarness(t, nil)
	c := mustDial(t, h.addr(), "/ws?user=a")
	a := h.conn("a")
	const n = 300 // 18 MB: more than loopback buffers hold
	payload := strings.Repeat("y", 60000)
	frame := textFrame(payload)
	for i := 0; i < n; i++ {
		a.src.push(frame)
	}
	a.req.Conn.Wake()
	eventually(t, 5*time.Second, func() error {
		if h.hooks.bytes.Load() == 0 {
			return errors.New("nothing written yet")
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // the socket fills; the rest waits as pending
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.s.Drain(ctx) }()
	for i := 0; i < n; i++ {
		f, err := c.readFrame(t, 5*time.Second)
		if err != nil {
			t.Fatalf("frame %d of %d: %v", i+1, n, err)
		}
		if f.Header.OpCode != ws.OpText || len(f.Payload) != len(payload) {
			code, reason := ws.ParseCloseFrameData(f.Payload)
			t.Fatalf("frame %d of %d: op %v (close %d %q), want the next event", i+1, n, f.Header.OpCode, code, reason)
		}
	}
	c.expectClose(t, CloseGoingAway)
	_ = c.nc.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return")
	}
}

func TestDrainDeadlineKillsStalled(t *testing.T) {
	h := newHarness(t, nil)
	c := mustDial(t, h.addr(), "/ws?user=a")
	_ = c
	a := h.conn("a")
	frame := textFrame(strings.Repeat("z", 60000))
	for i := 0; i < 300; i++ {
		a.src.push(frame)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := h.s.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain: %v", err)
	}
	eventually(t, 2*time.Second, func() error {
		if n := h.s.Conns(); n != 0 {
			return fmt.Errorf("%d conns", n)
		}
		return nil
	})
}

// TestConcurrentWakes hammers Wake from several goroutines while frames are
// pushed; every client must get every frame once, in order.
func TestConcurrentWakes(t *testing.T) {
	h := newHarness(t, nil)
	const nconn, nframe = 10, 400
	clients := make([]*client, nconn)
	srcs := make([]*accepted, nconn)
	for i := range clients {
		user := fmt.Sprint("w", i)
		clients[i] = mustDial(t, h.addr(), "/ws?user="+user)
		srcs[i] = h.conn(user)
	}
	frames := make([][]byte, nframe)
	for i := range frames {
		frames[i] = textFrame(fmt.Sprint(i))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < nframe; i++ {
			for _, a := range srcs {
				a.src.push(frames[i])
				a.req.Conn.Wake()
				a.req.Conn.Wake()
			}
		}
	}()
	waker := make(chan struct{})
	go func() {
		defer close(waker)
		for {
			select {
			case <-done:
				return
			default:
			}
			for _, a := range srcs {
				a.req.Conn.Wake()
			}
		}
	}()
	for _, c := range clients {
		for i := 0; i < nframe; i++ {
			c.expectText(t, fmt.Sprint(i))
		}
	}
	<-done
	<-waker
}

// An upgraded connection holds one descriptor of its own (the net.Conn of
// the handshake is closed at registration), and teardown closes it, whichever
// side ends the connection.
func TestDescriptorPerConnection(t *testing.T) {
	h := newHarness(t, nil)
	openFDs := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		return len(ents)
	}
	base := openFDs()
	const n = 20
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = mustDial(t, h.addr(), fmt.Sprintf("/ws?user=u%d", i))
	}
	eventually(t, 2*time.Second, func() error {
		if got := openFDs() - base; got != 2*n {
			return fmt.Errorf("%d descriptors for %d connections and their clients", got, n)
		}
		return nil
	})
	for i, c := range clients {
		if i%2 == 0 {
			h.conn(fmt.Sprintf("u%d", i)).req.Conn.Close(CloseNormal, "bye")
			c.expectClose(t, CloseNormal)
		}
		c.nc.Close()
	}
	eventually(t, 3*time.Second, func() error {
		if got := openFDs() - base; got != 0 {
			return fmt.Errorf("%d descriptors left", got)
		}
		if c := h.s.Conns(); c != 0 {
			return fmt.Errorf("%d connections left", c)
		}
		return nil
	})
}
