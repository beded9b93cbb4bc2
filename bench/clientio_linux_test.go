//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// serverFrame is an unmasked server frame.
func serverFrame(fin bool, op ws.OpCode, payload []byte) []byte {
	var b bytes.Buffer
	_ = ws.WriteHeader(&b, ws.Header{Fin: fin, OpCode: op, Length: int64(len(payload))})
	b.Write(payload)
	return b.Bytes()
}

// TestEpollLoopFrames drives one loop over a real socket with what the
// bridge may send: a frame the handshake read ahead, frames split across
// writes, a fragmented message, a long frame, a ping (answered with a
// masked pong), then a close frame whose code the client keeps.
func TestEpollLoopFrames(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	l, err := newLoop()
	if err != nil {
		t.Fatal(err)
	}
	go l.run()
	defer l.halt()
	var caught atomic.Int64
	c := &wsClient{user: 3, tag: runTag("R"), caught: &caught, done: make(chan struct{})}
	ev := func(id string) []byte {
		return []byte(`{"id":"` + id + `","type":"bench","data":{"t":1,"u":3,"r":"R","p":"x"}}`)
	}
	read := append(serverFrame(true, ws.OpText, ev("1-0")), serverFrame(true, ws.OpText, ev("2-0"))[:5]...)
	ahead := bufio.NewReader(bytes.NewReader(read))
	if _, err := ahead.Peek(len(read)); err != nil {
		t.Fatal(err)
	}
	if err := l.attach(c, conn, ahead); err != nil {
		t.Fatal(err)
	}
	var stream []byte
	stream = append(stream, serverFrame(true, ws.OpText, ev("2-0"))[5:]...) // the rest of the frame cut above
	long := ev("3-0")
	long = append(long[:len(long)-3], bytes.Repeat([]byte("y"), 70000)...)
	long = append(long, `"}}`...)
	stream = append(stream, serverFrame(true, ws.OpText, long)...)
	frag := ev("4-0")
	stream = append(stream, serverFrame(false, ws.OpText, frag[:10])...)
	stream = append(stream, serverFrame(true, ws.OpPing, []byte("hi"))...) // control frames may come between fragments
	stream = append(stream, serverFrame(true, ws.OpContinuation, frag[10:])...)
	stream = append(stream, serverFrame(true, ws.OpText, []byte(`{"control":"caught_up","last":"4-0"}`))...)
	for i := 0; i < len(stream); i += 777 { // cut anywhere, headers too
		if _, err := srv.Write(stream[i:min(i+777, len(stream))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	_ = srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ws.ReadHeader(srv)
	if err != nil || h.OpCode != ws.OpPong || !h.Masked || h.Length != 2 {
		t.Fatalf("pong header %+v, %v", h, err)
	}
	pong := make([]byte, 2)
	if _, err := io.ReadFull(srv, pong); err != nil || string(pong) != "hi" {
		t.Fatalf("pong %q, %v", pong, err)
	}
	body := make([]byte, 2)
	binary.BigEndian.PutUint16(body, 4001)
	if _, err := srv.Write(serverFrame(true, ws.OpClose, body)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not see the close frame")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unique != 4 || c.dups != 0 || c.misdeliver != 0 || c.caughtUpUS == 0 || !c.serverClosed || c.closeCode != 4001 {
		t.Fatalf("unique %d dups %d misdelivered %d caught_up %d closed %v code %d", c.unique, c.dups, c.misdeliver, c.caughtUpUS, c.serverClosed, c.closeCode)
	}
	if l.recv.Load() != 4 || l.live.hist.N != 4 {
		t.Fatalf("loop received %d, %d latency samples", l.recv.Load(), l.live.hist.N)
	}
}

// TestEpollHangupEndsTheConnection: closing from our side sends a masked
// close 1000 and ends the connection without a server close recorded.
func TestEpollHangupEndsTheConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cio := newClientIO(1, nil)
	defer cio.stop()
	var caught atomic.Int64
	c := &wsClient{user: 0, caught: &caught, done: make(chan struct{})}
	if err := cio.attach(c, conn, nil); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { c.close(); close(closed) }()
	_ = srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ws.ReadHeader(srv)
	if err != nil || h.OpCode != ws.OpClose || !h.Masked {
		t.Fatalf("close header %+v, %v", h, err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(srv, p); err != nil {
		t.Fatal(err)
	}
	ws.Cipher(p, h.Mask, 0)
	if code, _ := ws.ParseCloseFrameData(p); code != ws.StatusNormalClosure {
		t.Fatalf("close code %d", code)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("close did not return")
	}
	if !c.down() || c.serverClosed {
		t.Fatalf("down %v, server closed %v", c.down(), c.serverClosed)
	}
}

func TestMergeReservoirsKeepsShares(t *testing.T) {
	var a, b latencySink
	for i := range int64(30000) {
		a.add(i, 1)
	}
	for i := range int64(10000) {
		b.add(i, 2)
	}
	got := mergeReservoirs([]*latencySink{&a, &b})
	var ones int
	for _, s := range got {
		if s.LatUS == 1 {
			ones++
		}
	}
	if len(got) != reservoirSize || ones != reservoirSize*3/4 {
		t.Fatalf("%d samples, %d from the sink with 3/4 of the deliveries", len(got), ones)
	}
}
