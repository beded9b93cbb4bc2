package bridgetest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/bridge"
)

// peer is a bridge.Peer that records wakes and the close.
type peer struct {
	wakeCh chan struct{}

	mu     sync.Mutex
	code   int
	reason string
}

func newPeer() *peer { return &peer{wakeCh: make(chan struct{}, 1)} }

func (p *peer) Wake() {
	select {
	case p.wakeCh <- struct{}{}:
	default:
	}
}

func (p *peer) Close(code int, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.code == 0 {
		p.code, p.reason = code, reason
	}
}

func (p *peer) closed() (int, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code, p.reason
}

// frame is a decoded server frame.
type frame struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Data      json.RawMessage `json:"data"`
	Control   string          `json:"control"`
	Last      string          `json:"last"`
	Requested string          `json:"requested"`
	Oldest    string          `json:"oldest"`
}

func (f frame) String() string {
	if f.Control != "" {
		return fmt.Sprintf("%s(last=%s req=%s old=%s)", f.Control, f.Last, f.Requested, f.Oldest)
	}
	return f.ID
}

func decodeFrame(tb testing.TB, b []byte) frame {
	tb.Helper()
	if len(b) < 2 || b[0] != 0x81 {
		tb.Fatalf("not a text frame: % x", b)
	}
	h := bridge.TextFrameHeaderLen(0)
	switch b[1] {
	case 126:
		h = 4
	case 127:
		h = 10
	}
	var f frame
	if err := json.Unmarshal(b[h:], &f); err != nil {
		tb.Fatalf("frame %q: %v", b[h:], err)
	}
	return f
}

// conn is a test connection: the cursor, its peer and what it received.
type conn struct {
	h      *bridge.Hub
	c      *bridge.Cursor
	peer   *peer
	frames []frame
	bufs   [][]byte
}

func tryAccept(h *bridge.Hub, user string, groups []string, query, header string) (*conn, error) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, err
	}
	rq, err := bridge.ParseResumeQuery(q, header)
	if err != nil {
		return nil, err
	}
	p := newPeer()
	c, err := h.Accept(p, bridge.Identity{User: user, Groups: groups}, rq)
	if err != nil {
		return nil, err
	}
	return &conn{h: h, c: c, peer: p}, nil
}

// pull calls Pull once and records the frames.
func (tc *conn) pull(tb testing.TB, maxBytes int) int {
	tb.Helper()
	tc.bufs = tc.c.Pull(tc.bufs[:0], maxBytes)
	for _, b := range tc.bufs {
		tc.frames = append(tc.frames, decodeFrame(tb, b))
	}
	return len(tc.bufs)
}

// drain pulls until nothing is ready and no page it waits for is being read,
// as the transport's drainer does on wakes. A cursor waiting for a page is
// one of the page's waiters: it is woken in the same critical section that
// takes the page off the pending reads, so once PendingReads is 0 after an
// empty Pull, either a wake is waiting or nothing more is due.
func (tc *conn) drain(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case <-tc.peer.wakeCh: // served by the Pull below
		default:
		}
		if tc.pull(tb, 1<<20) > 0 {
			continue
		}
		if tc.h.PendingReads() == 0 {
			select {
			case <-tc.peer.wakeCh:
				continue
			default:
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("drain: backfill pages still pending after 5s")
		}
		select {
		case <-tc.peer.wakeCh:
		case <-time.After(time.Millisecond): // maybe another cursor's page
		}
	}
}

// ids lists the event ids received, in order.
func (tc *conn) ids() []string {
	var out []string
	for _, f := range tc.frames {
		if f.Control == "" {
			out = append(out, f.ID)
		}
	}
	return out
}

func (tc *conn) controls(kind string) int {
	n := 0
	for _, f := range tc.frames {
		if f.Control == kind {
			n++
		}
	}
	return n
}

func (tc *conn) summary() string {
	var b strings.Builder
	for _, f := range tc.frames {
		b.WriteString(f.String())
		b.WriteByte(' ')
	}
	return b.String()
}
