package bridge

import (
	"context"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/conntest"
)

// memStore is an in-memory stream behind the Store interface: XADD with
// increasing ids, trimming from the old end (Redis 7 bookkeeping of
// max-deleted-entry-id), XRANGE, XREVRANGE, XINFO. Entries with a nil event
// stand for undecodable entries: they take an id but are never returned.
type memStore struct {
	mu         sync.Mutex
	entries    []memEntry // live entries, ascending
	lastGen    ID
	maxDel     ID
	hideMaxDel bool // behave like miniredis: MaxDeletedKnown false
	clock      uint64

	// gate, when set, blocks Range until it is closed (sharing tests).
	gate chan struct{}
	// rtt, when set, is added to every call, like a network round trip.
	rtt    time.Duration
	ranges atomic.Int64
	revs   atomic.Int64
	infos  atomic.Int64
}

type memEntry struct {
	id ID
	ev *Event
}

func newMemStore() *memStore { return &memStore{clock: 1700000000000} }

// add appends an entry; step 0 reuses the current millisecond (seq+1).
func (s *memStore) add(tb testing.TB, to, typ, data string, step uint64) *Event {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock += step
	id := ID{Ms: s.clock}
	if !s.lastGen.Less(id) {
		id = s.lastGen.Next()
	}
	ev, err := NewEvent(id, typ, to, data, DefaultLimits)
	if err != nil {
		tb.Fatalf("NewEvent: %v", err)
	}
	s.entries = append(s.entries, memEntry{id: id, ev: ev})
	s.lastGen = id
	return ev
}

// addBad appends an undecodable entry.
func (s *memStore) addBad() ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock++
	id := ID{Ms: s.clock}
	s.entries = append(s.entries, memEntry{id: id})
	s.lastGen = id
	return id
}

// trim deletes the n oldest entries.
func (s *memStore) trim(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n = min(n, len(s.entries))
	if n == 0 {
		return
	}
	s.maxDel = s.entries[n-1].id
	s.entries = slices.Delete(s.entries, 0, n)
}

// flush loses every entry, as Redis restarted without its data does: the
// stream starts over with nothing generated and nothing recorded as
// deleted. The clock goes on, so new ids are above every lost one.
func (s *memStore) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries, s.lastGen, s.maxDel = nil, ID{}, ID{}
	s.clock++
}

func (s *memStore) firstID() (ID, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.entries) == 0 {
		return ID{}, false
	}
	return s.entries[0].id, true
}

func (s *memStore) Range(ctx context.Context, from ID, count int) ([]*Event, ID, error) {
	s.ranges.Add(1)
	if s.rtt > 0 {
		time.Sleep(s.rtt)
	}
	if g := s.gate; g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return nil, ID{}, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.entries, from, func(e memEntry, id ID) int { return e.id.Compare(id) })
	var out []*Event
	var last ID
	for ; i < len(s.entries) && count > 0; i++ {
		count--
		last = s.entries[i].id
		if s.entries[i].ev != nil {
			out = append(out, s.entries[i].ev)
		}
	}
	return out, last, nil
}

func (s *memStore) RevRange(_ context.Context, before ID, count int) ([]*Event, ID, error) {
	s.revs.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearchFunc(s.entries, before, func(e memEntry, id ID) int { return e.id.Compare(id) })
	if !found {
		i--
	}
	var out []*Event
	var last ID
	for ; i >= 0 && count > 0; i-- {
		count--
		last = s.entries[i].id
		if s.entries[i].ev != nil {
			out = append(out, s.entries[i].ev)
		}
	}
	return out, last, nil
}

func (s *memStore) Info(context.Context) (StreamInfo, error) {
	s.infos.Add(1)
	if s.rtt > 0 {
		time.Sleep(s.rtt)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	info := StreamInfo{
		Exists:          !s.lastGen.IsZero(),
		Length:          int64(len(s.entries)),
		LastGeneratedID: s.lastGen,
		MaxDeletedID:    s.maxDel,
		MaxDeletedKnown: !s.hideMaxDel,
	}
	if len(s.entries) > 0 {
		info.FirstID = s.entries[0].id
	}
	if s.hideMaxDel {
		info.MaxDeletedID = ID{}
	}
	return info, nil
}

// fakePeer records wakes and closes; wakeCh is its Woken channel.
type fakePeer struct {
	*conntest.Peer
	wakeCh <-chan struct{}
}

func newFakePeer() *fakePeer {
	p := conntest.NewPeer()
	return &fakePeer{Peer: p, wakeCh: p.Woken()}
}

func (p *fakePeer) closeCode() int {
	code, _ := p.Closed()
	return code
}

// frame is a decoded server frame.
type frame = conntest.Frame

// tconn is a test connection: the cursor, its peer and what it received.
type tconn struct {
	c      *Cursor
	peer   *fakePeer
	frames conntest.Frames
	bufs   [][]byte
}

func accept(tb testing.TB, h *Hub, user string, groups []string, query string, header string) *tconn {
	tb.Helper()
	tc, err := tryAccept(h, user, groups, query, header)
	if err != nil {
		tb.Fatalf("Accept(%s %v %q %q): %v", user, groups, query, header, err)
	}
	return tc
}

func tryAccept(h *Hub, user string, groups []string, query string, header string) (*tconn, error) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, err
	}
	rq, err := ParseResumeQuery(q, header)
	if err != nil {
		return nil, err
	}
	p := newFakePeer()
	c, err := h.Accept(p, Identity{User: user, Groups: groups}, rq)
	if err != nil {
		return nil, err
	}
	return &tconn{c: c, peer: p}, nil
}

// pending reports whether the last Pull stopped at a page not yet read
// (after an empty Pull, a backfilling cursor keeps its page only then). The
// page may be ready by now; its wake is then already in wakeCh.
func (tc *tconn) pending() bool {
	return tc.c.mode == modeBackfill && tc.c.resume != nil && tc.c.resume.page != nil
}

// pull calls Pull once and records the frames.
func (tc *tconn) pull(tb testing.TB, maxBytes int) int {
	tb.Helper()
	tc.bufs = tc.c.Pull(tc.bufs[:0], maxBytes)
	tc.frames.Record(tb, tc.bufs)
	return len(tc.bufs)
}

// drain pulls until nothing is ready, waiting (bounded) for backfill pages.
func (tc *tconn) drain(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if tc.pull(tb, 1<<20) > 0 {
			continue
		}
		if !tc.pending() {
			return
		}
		select {
		case <-tc.peer.wakeCh:
		case <-time.After(time.Until(deadline)):
			tb.Fatalf("drain: backfill page still pending after 5s")
		}
	}
}

// ids lists the event ids received, in order.
func (tc *tconn) ids() []string { return tc.frames.IDs() }

func (tc *tconn) controls(kind string) []frame { return tc.frames.Controls(kind) }

func (tc *tconn) summary() string { return tc.frames.String() }

func newTestHub(tb testing.TB, cfg Config, s Store) *Hub {
	tb.Helper()
	if cfg.CursorInterval == 0 {
		cfg.CursorInterval = time.Hour
	}
	h, err := NewHub(cfg, s)
	if err != nil {
		tb.Fatalf("NewHub: %v", err)
	}
	tb.Cleanup(func() {
		if err := h.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	if _, err := h.Warm(context.Background()); err != nil {
		tb.Fatalf("Warm: %v", err)
	}
	return h
}

func idsOf(evs ...*Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID.String()
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}
