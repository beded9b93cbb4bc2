package fault

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
)

// This file holds what the data-loss and promotion tests share: sessions that
// record where each connection went and what it resumed from, and an oracle
// that says what each connection should have got from facts the test
// recorded (what each stream held, what each node read), never from what the
// bridge sent.

// tracked is a resumer that also records, for each of its connections, the
// node incarnation it went to and the id it resumed from.
type tracked struct {
	*resumer
	role int
	meta []connMeta // parallel to conns
}

type connMeta struct {
	node string // the node incarnation, e.g. "A1" (before its restart), "A2", "B"
	from string // the id resumed from
}

// connectTo is resumer.connect that records the connection's node and
// resume id. A failed dial leaves conns and meta as they were (apart from
// the previous connection, closed first so the id it got is final).
func (s *tracked) connectTo(addr, node string) error {
	if n := len(s.conns); n > 0 {
		s.conns[n-1].Close()
	}
	from := s.last()
	q := "user=" + s.user + s.query
	if len(s.groups) > 0 {
		q += "&groups=" + strings.Join(s.groups, ",")
	}
	if from != "" {
		q += "&last_event_id=" + from
	}
	c, err := e2e.TryDial(s.t, addr, q, nil)
	if err != nil {
		return err
	}
	s.conns = append(s.conns, c)
	s.meta = append(s.meta, connMeta{node: node, from: from})
	return nil
}

// connectRetry retries connectTo until it succeeds or timeout passes (a node
// refuses handshakes with 503 while Redis is gone or it is starting). It is
// safe from any goroutine: it returns the error instead of failing the test.
func (s *tracked) connectRetry(addr, node string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := s.connectTo(addr, node)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: connect to %s (%s) not within %v: %w", s.user, node, addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// current is the session's newest connection and its record.
func (s *tracked) current() (*e2e.Client, connMeta) {
	n := len(s.conns) - 1
	return s.conns[n], s.meta[n]
}

// trackedSessions connects one session per name to addr (node incarnation
// node) while the stream's newest entry is head and nothing is appended, and
// checks each is live at head: their first connection starts after head.
// Session i has role i%roles, and the groups of groupSessions.
func trackedSessions(t testing.TB, addr, node, head string, names, groups []string, roles int) []*tracked {
	t.Helper()
	ss := make([]*tracked, len(names))
	for i, u := range names {
		r := newResumer(t, u)
		r.groups = []string{groups[i%len(groups)]}
		if i%3 == 0 {
			r.groups = append(r.groups, groups[(i+1)%len(groups)])
		}
		ss[i] = &tracked{resumer: r, role: i % roles}
		if err := ss[i].connectRetry(addr, node, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range ss {
		c, _ := s.current()
		if f := c.WaitControl("caught_up", 10*time.Second); f.Last != head {
			t.Fatalf("%s: caught_up %s, want the head %s", s.user, f.Raw, head)
		}
		s.meta[0].from = head // live at head: what follows head is due
	}
	return ss
}

// hopper moves sessions between nodes on goroutines it owns until stop.
type hopper struct {
	wg    sync.WaitGroup
	stop  chan struct{}
	mu    sync.Mutex
	moves int
	errs  []error
}

// startHops starts one goroutine per session that, every 200–800 ms,
// reconnects it where next says (next gets the session and its own
// generator; addr "" means stay). Reconnects that fail are retried for 20 s
// (a node may be restarting or not ready), then reported by wait.
func startHops(ss []*tracked, seed uint64, next func(s *tracked, rng *rand.Rand) (addr, node string)) *hopper {
	h := &hopper{stop: make(chan struct{})}
	for i, s := range ss {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for {
				select {
				case <-h.stop:
					return
				case <-time.After(time.Duration(200+rng.IntN(600)) * time.Millisecond):
				}
				addr, node := next(s, rng)
				if addr == "" {
					continue
				}
				if err := s.connectRetry(addr, node, 20*time.Second); err != nil {
					h.mu.Lock()
					h.errs = append(h.errs, err)
					h.mu.Unlock()
					return
				}
				h.mu.Lock()
				h.moves++
				h.mu.Unlock()
			}
		}()
	}
	return h
}

// wait stops the hops, waits for the goroutines and returns the moves made.
func (h *hopper) wait(t testing.TB) int {
	t.Helper()
	close(h.stop)
	h.wg.Wait()
	if err := errors.Join(h.errs...); err != nil {
		t.Fatal(err)
	}
	return h.moves
}

// frozenRead pauses writes on rdb's server (CLIENT PAUSE WRITE: XADD,
// XREADGROUP and XACK wait), checks that every consumer group has read the
// whole stream, and returns the stream, still paused: what the caller then
// does to the server (SHUTDOWN NOSAVE) happens with exactly these entries in
// it, every one read by every node. While a group lags, writes are let
// through for a moment so the node can read, and the check repeats.
func frozenRead(t testing.TB, rdb *redis.Client, stream string) []redis.XMessage {
	t.Helper()
	ctx := context.Background()
	for try := 0; ; try++ {
		if err := rdb.Do(ctx, "CLIENT", "PAUSE", 3000, "WRITE").Err(); err != nil {
			t.Fatalf("CLIENT PAUSE: %v", err)
		}
		last, err := rdb.XRevRangeN(ctx, stream, "+", "-", 1).Result()
		if err != nil || len(last) == 0 {
			t.Fatalf("XREVRANGE: %v %v", last, err)
		}
		groups, err := rdb.XInfoGroups(ctx, stream).Result()
		if err != nil {
			t.Fatalf("XINFO GROUPS: %v", err)
		}
		behind := len(groups) == 0
		for _, g := range groups {
			behind = behind || g.LastDeliveredID != last[0].ID
		}
		if !behind {
			msgs, err := rdb.XRange(ctx, stream, "-", "+").Result()
			if err != nil {
				t.Fatalf("XRANGE: %v", err)
			}
			return msgs
		}
		if try == 300 {
			t.Fatalf("consumer groups %v never caught up with %s while writes were paused", groups, last[0].ID)
		}
		if err := rdb.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
			t.Fatalf("CLIENT UNPAUSE: %v", err)
		}
		time.Sleep(time.Duration(1+try%5) * time.Millisecond)
	}
}

// shutdownNoSave ends the paused server without writing its data anywhere.
func shutdownNoSave(rdb *redis.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rdb.ShutdownNoSave(ctx).Err() // the reply is the connection closing
}

// oracle is what the test knows: every entry ever appended, in id order
// (across the streams Redis lost and the one it has now), and per node
// incarnation the ids it holds (its replay window or the stream it reads;
// the windows here never evict). Call add and hold before dueFor; dueFor
// caches what it derives from them.
type oracle struct {
	all  []redis.XMessage
	held map[string]map[string]bool

	mine    map[*tracked][]int // positions in all of the entries for a session
	missing map[string][]int   // positions in all of the entries a node does not hold
}

func newOracle() *oracle {
	return &oracle{held: map[string]map[string]bool{}, mine: map[*tracked][]int{}, missing: map[string][]int{}}
}

// add appends entries, which must all be newer than those added before.
func (o *oracle) add(t testing.TB, msgs []redis.XMessage) {
	t.Helper()
	for _, m := range msgs {
		if n := len(o.all); n > 0 && !idLess(o.all[n-1].ID, m.ID) {
			t.Fatalf("entry %s is not after %s: the new stream reuses ids", m.ID, o.all[n-1].ID)
		}
		o.all = append(o.all, m)
	}
}

// hold records that node holds msgs.
func (o *oracle) hold(node string, msgs []redis.XMessage) {
	if o.held[node] == nil {
		o.held[node] = map[string]bool{}
	}
	for _, m := range msgs {
		o.held[node][m.ID] = true
	}
}

// due is what one connection should get.
type due struct {
	events  []string // for the session, after from, held by the node, in order
	gap     bool     // a gap frame must come first
	mayGap  bool     // a gap frame may come first (known only conservatively)
	unknown int      // events for the session after from that the node cannot know were lost
	oldest  string   // the gap's oldest: the oldest id the node holds
}

// dueFor applies the contract to connection i of s: the events after its
// resume id that its node holds, and a gap exactly when an entry after the
// id is held by neither the node nor the stream. When the resume id itself
// is one the node never held, the node can tell the id is from a stream it
// did not read; a gap is then allowed even with nothing after the id (the
// last lost id: nothing after it was lost, but the stream cannot say so).
// unknowable says which of the node's missing entries it cannot know of (it
// holds the resume id, so the stream it reads looks complete after it).
func (o *oracle) dueFor(s *tracked, i int, unknowable func(node, from string) bool) due {
	m := s.meta[i]
	held := o.held[m.node]
	mine, ok := o.mine[s]
	if !ok {
		for p, e := range o.all {
			if addressedTo(e, s.resumer) {
				mine = append(mine, p)
			}
		}
		o.mine[s] = mine
	}
	missing, ok := o.missing[m.node]
	if !ok {
		for p, e := range o.all {
			if !held[e.ID] {
				missing = append(missing, p)
			}
		}
		o.missing[m.node] = missing
	}
	var d due
	for _, e := range o.all {
		if held[e.ID] {
			d.oldest = e.ID
			break
		}
	}
	after := sort.Search(len(o.all), func(p int) bool { return idLess(m.from, o.all[p].ID) })
	known := after > 0 && o.all[after-1].ID == m.from
	missingMine := 0
	for _, p := range mine[sort.SearchInts(mine, after):] {
		if id := o.all[p].ID; held[id] {
			d.events = append(d.events, id)
		} else {
			missingMine++
		}
	}
	switch lost := len(missing) > 0 && missing[len(missing)-1] >= after; {
	case lost && unknowable != nil && unknowable(m.node, m.from):
		// The node holds the id and the stream it reads continues after it
		// with nothing recorded deleted: nothing tells it what it never read
		// (documented; no gap can be due).
		d.unknown = missingMine
	case lost:
		d.gap = true
	case known && !held[m.from]:
		d.mayGap = true
	}
	return d
}

// addressedTo reports whether entry e is for session r: its user, one of its
// groups, or *.
func addressedTo(e redis.XMessage, r *resumer) bool {
	to, _ := e.Values["to"].(string)
	for _, item := range strings.Split(to, ",") {
		switch {
		case item == "*":
			return true
		case strings.HasPrefix(item, "user:") && item[len("user:"):] == r.user:
			return true
		case strings.HasPrefix(item, "group:") && slices.Contains(r.groups, item[len("group:"):]):
			return true
		}
	}
	return false
}

// tally is what the checks counted, for the test's log and reliability.md.
type tally struct {
	conns, deliveries, gaps, gapsDue, conservative, unknown int
	notes                                                   []string       // the conservative gaps, named
	byNode                                                  map[string]int // due gaps received, per node incarnation
}

// errIncomplete marks a connection that has had only part of what is due:
// the one failure that waiting may still mend.
var errIncomplete = errors.New("not everything yet")

// checkConn compares connection i of s with what is due: a gap frame first
// when due (and only then, or when allowed), naming the resume id and the
// oldest id the node holds; then exactly a prefix of the due events (all of
// them when complete), in order, none twice.
func checkConn(s *tracked, i int, d due, complete bool, tl *tally) error {
	m := s.meta[i]
	fs := s.conns[i].Snapshot()
	where := fmt.Sprintf("%s connection %d (node %s, from %s)", s.user, i, m.node, m.from)
	var got []string
	for j, f := range fs {
		switch {
		case f.ID != "":
			got = append(got, f.ID)
		case f.Control == "gap":
			if j != 0 || !(d.gap || d.mayGap) {
				return fmt.Errorf("%s: %s as frame %d; due: gap=%v may=%v", where, f.Raw, j, d.gap, d.mayGap)
			}
			if f.Requested != m.from || f.Oldest != d.oldest {
				return fmt.Errorf("%s: %s, want requested %s oldest %s", where, f.Raw, m.from, d.oldest)
			}
			if tl != nil {
				tl.gaps++
				if !d.gap {
					tl.conservative++
					tl.notes = append(tl.notes, where+": "+f.Raw)
				}
			}
		case f.Control == "caught_up" || f.Control == "cursor":
		default:
			return fmt.Errorf("%s: unexpected frame %s", where, f.Raw)
		}
	}
	if d.gap && len(fs) > 0 && fs[0].Control != "gap" {
		return fmt.Errorf("%s: first frame %s, want a gap (requested %s oldest %s): events after the id are gone", where, fs[0].Raw, m.from, d.oldest)
	}
	if len(got) > len(d.events) {
		return fmt.Errorf("%s: %d events, only %d due (first extra %s)", where, len(got), len(d.events), got[len(d.events)])
	}
	for j, id := range got {
		if id != d.events[j] {
			return fmt.Errorf("%s: event %d is %s, want %s (of %d due)", where, j, id, d.events[j], len(d.events))
		}
	}
	if complete && len(got) != len(d.events) {
		return fmt.Errorf("%s: %d of %d due events (next %s): %w", where, len(got), len(d.events), d.events[len(got)], errIncomplete)
	}
	if tl != nil {
		tl.conns++
		tl.deliveries += len(got)
		tl.unknown += d.unknown
		if d.gap && len(fs) > 0 {
			tl.gapsDue++
			if tl.byNode == nil {
				tl.byNode = map[string]int{}
			}
			tl.byNode[m.node]++
		}
	}
	return nil
}

// checkSessions waits until the newest connection of every session holds
// everything due to it, then checks every connection of every session.
func checkSessions(t testing.TB, o *oracle, ss []*tracked, unknowable func(node, from string) bool, timeout time.Duration) tally {
	t.Helper()
	e2e.WaitFor(t, timeout, "every session's newest connection has everything due", func() error {
		var errs []error
		for _, s := range ss {
			i := len(s.conns) - 1
			if err := checkConn(s, i, o.dueFor(s, i, unknowable), true, nil); err != nil {
				if !errors.Is(err, errIncomplete) {
					t.Fatal(err) // wrong already; waiting cannot mend it
				}
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
	var tl tally
	for _, s := range ss {
		for i := range s.conns {
			if err := checkConn(s, i, o.dueFor(s, i, unknowable), i == len(s.conns)-1, &tl); err != nil {
				t.Error(err)
			}
		}
	}
	return tl
}

// waitStatus polls /readyz until it is want and returns how long that took.
func waitStatus(t testing.TB, admin string, want int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	e2e.WaitFor(t, timeout, fmt.Sprintf("readyz %d", want), func() error {
		if s := readyStatus(admin); s != want {
			return fmt.Errorf("readyz %d", s)
		}
		return nil
	})
	return time.Since(start)
}

// byRole returns the sessions with one of roles.
func byRole(ss []*tracked, roles ...int) []*tracked {
	var out []*tracked
	for _, s := range ss {
		if slices.Contains(roles, s.role) {
			out = append(out, s)
		}
	}
	return out
}

// resumers unwraps sessions for the shared helpers.
func resumers(ss []*tracked) []*resumer {
	out := make([]*resumer, len(ss))
	for i, s := range ss {
		out[i] = s.resumer
	}
	return out
}

// waitAppended waits until the node's window has had n events appended
// (so a session connecting now is live at the newest of them).
func waitAppended(t testing.TB, admin string, n float64) {
	t.Helper()
	e2e.WaitFor(t, 10*time.Second, "events in the window", func() error {
		m, err := metrics(admin)
		if err != nil {
			return err
		}
		if v := m["notifybridge_replay_window_appends_total"]; v < n {
			return fmt.Errorf("%v appended, want %v", v, n)
		}
		return nil
	})
}

// splitFirstMove picks where each session hops: its first move after the
// fault goes to the node that did not see it (addrNew) for half the
// sessions and back to the one that did (addrOld) for the rest, so both
// sides of the gap rule run whatever the generator draws; later moves are a
// coin toss.
func splitFirstMove(ss []*tracked, addrNew, nameNew, addrOld, nameOld string) func(*tracked, *rand.Rand) (string, string) {
	moved := map[*tracked]*bool{} // each hop goroutine writes its own
	for _, s := range ss {
		moved[s] = new(bool)
	}
	return func(s *tracked, rng *rand.Rand) (string, string) {
		if !*moved[s] {
			*moved[s] = true
			if half(s) {
				return addrNew, nameNew
			}
			return addrOld, nameOld
		}
		if rng.IntN(2) == 0 {
			return addrNew, nameNew
		}
		return addrOld, nameOld
	}
}
