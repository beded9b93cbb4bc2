package bench

import (
	"bufio"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// goroutineIO reads each connection in a goroutine of its own, over
// net.Conn: the client everywhere but Linux. Its sinks are the set's, one
// lock for every client of the process.
type goroutineIO struct {
	live, replay latencySink
	recv         atomic.Int64
}

func newGoroutineIO(phase *atomic.Int32) *goroutineIO {
	g := &goroutineIO{}
	g.live.phase = phase
	return g
}

func (g *goroutineIO) attach(c *wsClient, conn net.Conn, br *bufio.Reader) error {
	var r io.Reader = conn
	if br != nil && br.Buffered() > 0 {
		r = io.MultiReader(br, conn)
	}
	c.received, c.replayed = &g.recv, &g.replay
	c.send = func(msg []byte) {
		c.wmu.Lock()
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = conn.Write(textFrame(msg))
		c.wmu.Unlock()
	}
	c.hangup = func(sendClose bool) {
		if sendClose && !c.sse {
			c.wmu.Lock()
			_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = conn.Write(closeFrame())
			c.wmu.Unlock()
		}
		_ = conn.Close()
	}
	if c.sse {
		go c.readSSE(r, &g.live, c.done)
		return nil
	}
	go c.read(conn, r, &g.live, c.done)
	return nil
}

func (g *goroutineIO) received() int64 { return g.recv.Load() }

func (g *goroutineIO) merged() mergedLatency {
	g.live.mu.Lock()
	defer g.live.mu.Unlock()
	g.replay.mu.Lock()
	defer g.replay.mu.Unlock()
	return mergedLatency{live: g.live.hist, chart: g.live.samples, replay: g.replay.hist, phases: g.live.phases}
}

func (g *goroutineIO) stop() {}

// read reads one connection until it ends, then closes done.
func (c *wsClient) read(conn net.Conn, r io.Reader, sink *latencySink, done chan struct{}) {
	defer close(done)
	br := bufio.NewReaderSize(r, 2048)
	var buf, msg []byte
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			c.ended(0)
			return
		}
		if int64(cap(buf)) < h.Length {
			buf = make([]byte, h.Length)
		}
		p := buf[:h.Length]
		if _, err := io.ReadFull(br, p); err != nil {
			c.ended(0)
			return
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			c.wmu.Lock()
			_ = ws.WriteFrame(conn, ws.MaskFrame(ws.NewPongFrame(p)))
			c.wmu.Unlock()
			continue
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(p)
			c.ended(int(code))
			return
		case ws.OpText, ws.OpContinuation:
		default:
			continue
		}
		if !h.Fin || len(msg) > 0 { // fragmented: collect until the last frame
			msg = append(msg, p...)
			if !h.Fin {
				continue
			}
			p, msg = msg, msg[:0]
		}
		c.frame(p, sink)
	}
}
