package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// wsClient is one load-generating WebSocket client. It records every event id
// it receives to count losses and duplicates, and the latency of each event
// from the publish time carried in its data.
type wsClient struct {
	conn net.Conn
	r    io.Reader

	mu        sync.Mutex
	seen      map[string]struct{}
	dups      int
	caughtUp  time.Time
	lastID    string
	closeCode int

	received atomic.Int64
	done     chan struct{}
}

// latencySink collects latencies from every client.
type latencySink struct {
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at  time.Duration // since the run started
	lat time.Duration
}

func (s *latencySink) add(at, lat time.Duration) {
	s.mu.Lock()
	s.samples = append(s.samples, sample{at, lat})
	s.mu.Unlock()
}

func dialClient(ctx context.Context, url string) (*wsClient, error) {
	d := ws.Dialer{Timeout: 30 * time.Second}
	conn, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	c := &wsClient{conn: conn, seen: make(map[string]struct{}), done: make(chan struct{})}
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	c.r = r
	return c, nil
}

func (c *wsClient) start(start time.Time, sink *latencySink) {
	go c.read(start, sink)
}

// frameHead is the part of a frame the client looks at; data's "t" is the
// publish time in unix microseconds.
type frameHead struct {
	ID      string `json:"id"`
	Control string `json:"control"`
	Last    string `json:"last"`
	Data    struct {
		T int64 `json:"t"`
	} `json:"data"`
}

func (c *wsClient) read(start time.Time, sink *latencySink) {
	defer close(c.done)
	rw := struct {
		io.Reader
		io.Writer
	}{c.r, c.conn}
	var f frameHead
	for {
		msgs, err := wsutil.ReadServerMessage(rw, nil)
		now := time.Now()
		for _, m := range msgs {
			if m.OpCode == ws.OpClose {
				code, _ := ws.ParseCloseFrameData(m.Payload)
				c.mu.Lock()
				c.closeCode = int(code)
				c.mu.Unlock()
				continue
			}
			if m.OpCode != ws.OpText {
				continue
			}
			f = frameHead{}
			if bytes.HasPrefix(m.Payload, []byte(`{"id"`)) {
				if json.Unmarshal(m.Payload, &f) != nil {
					continue
				}
				c.mu.Lock()
				if _, dup := c.seen[f.ID]; dup {
					c.dups++
				} else {
					c.seen[f.ID] = struct{}{}
				}
				c.lastID = f.ID
				c.mu.Unlock()
				c.received.Add(1)
				if f.Data.T > 0 && sink != nil {
					sink.add(now.Sub(start), now.Sub(time.UnixMicro(f.Data.T)))
				}
				continue
			}
			if json.Unmarshal(m.Payload, &f) == nil && f.Control == "caught_up" {
				c.mu.Lock()
				if c.caughtUp.IsZero() {
					c.caughtUp = now
				}
				c.mu.Unlock()
			}
		}
		if err != nil {
			var ce wsutil.ClosedError
			if errors.As(err, &ce) {
				c.mu.Lock()
				c.closeCode = int(ce.Code)
				c.mu.Unlock()
			}
			return
		}
	}
}

func (c *wsClient) isCaughtUp() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.caughtUp.IsZero()
}

func (c *wsClient) close() {
	_ = c.conn.Close()
	<-c.done
}

func (c *wsClient) stats() (unique, dups, code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen), c.dups, c.closeCode
}

func userQuery(i int) string { return "user=u" + strconv.Itoa(i) }
