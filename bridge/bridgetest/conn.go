package bridgetest

import (
	"net/url"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/internal/conntest"
)

// conn is a test connection: the cursor, its peer and what it received.
type conn struct {
	h      *bridge.Hub
	c      *bridge.Cursor
	peer   *conntest.Peer
	frames conntest.Frames
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
	p := conntest.NewPeer()
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
	tc.frames.Record(tb, tc.bufs)
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
		case <-tc.peer.Woken(): // served by the Pull below
		default:
		}
		if tc.pull(tb, 1<<20) > 0 {
			continue
		}
		if tc.h.PendingReads() == 0 {
			select {
			case <-tc.peer.Woken():
				continue
			default:
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("drain: backfill pages still pending after 5s")
		}
		select {
		case <-tc.peer.Woken():
		case <-time.After(time.Millisecond): // maybe another cursor's page
		}
	}
}

// ids lists the event ids received, in order.
func (tc *conn) ids() []string { return tc.frames.IDs() }

func (tc *conn) controls(kind string) int { return len(tc.frames.Controls(kind)) }

func (tc *conn) summary() string { return tc.frames.String() }
