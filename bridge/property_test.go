package bridge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// propBackend is the stream under the property test. memStore implements it;
// the integration suite plugs an adapter over a real redis-server in here.
type propBackend interface {
	Store
	// Add appends an entry (XADD) and returns it as the decoder builds it.
	Add(tb testing.TB, to, typ, data string) *Event
	// AddBad appends an entry that does not decode.
	AddBad() ID
	// TrimThrough deletes every entry with an id <= last (XTRIM MINID
	// last.Next()).
	TrimThrough(last ID)
}

type memBackend struct {
	*memStore
	rnd *rand.Rand
}

func (b memBackend) Add(tb testing.TB, to, typ, data string) *Event {
	return b.add(tb, to, typ, data, uint64(b.rnd.IntN(3)))
}
func (b memBackend) AddBad() ID { return b.addBad() }
func (b memBackend) TrimThrough(last ID) {
	b.mu.Lock()
	n := 0
	for n < len(b.entries) && !last.Less(b.entries[n].id) {
		n++
	}
	b.mu.Unlock()
	b.trim(n)
}

// TestPropertyHub runs thousands of random schedules: producers append
// targeted and broadcast events, ingest appends them (with redeliveries), the
// stream is trimmed, clients connect, pull slowly or fast, disconnect and
// resume from their last id, caught_up.last, a time or anywhere, and the
// window is small enough to evict. For every connection the events received
// equal the filtered stream after its resume point minus what was gone at
// connect, in order without duplicates; gap is sent exactly by the contract
// rule; caught_up once in the right place; 1013 only when it fell out.
//
// BRIDGE_PROP_SEED=<n> replays one schedule; BRIDGE_PROP_N sets the count.
func TestPropertyHub(t *testing.T) {
	runPropertyHub(t, 3000, func(_ testing.TB, rnd *rand.Rand) propBackend {
		m := newMemStore()
		// One schedule in four behaves like miniredis (no
		// max-deleted-entry-id): gaps may then be conservative.
		m.hideMaxDel = rnd.IntN(4) == 0
		return memBackend{memStore: m, rnd: rnd}
	})
}

// runPropertyHub runs n schedules (fewer with -short), each over a fresh
// backend from newBackend, which must be an empty stream.
func runPropertyHub(t *testing.T, n int, newBackend func(tb testing.TB, rnd *rand.Rand) propBackend) {
	if testing.Short() {
		n = min(n, 300)
	}
	if s := os.Getenv("BRIDGE_PROP_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	seed0 := uint64(time.Now().UnixNano())
	if s := os.Getenv("BRIDGE_PROP_SEED"); s != "" {
		seed0, _ = strconv.ParseUint(s, 10, 64)
		n = 1
	}
	var st propStats
	defer func() {
		t.Logf("%d schedules from seed %d: %d connections, %d resumed from Redis, %d ahead of the head, %d gaps, %d closed 1013, %d events delivered, %d cursor frames, %d conservative gaps",
			n, seed0, st.conns, st.backfill, st.ahead, st.gaps, st.slow, st.events, st.cursors, st.conservative)
	}()
	for i := range n {
		seed := seed0 + uint64(i)
		rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		s := &schedule{t: t, rnd: rnd, b: newBackend(t, rnd), st: &st}
		if err := s.run(); err != nil {
			t.Fatalf("schedule failed; replay with BRIDGE_PROP_SEED=%d\n%v\nlog:\n%s", seed, err, strings.Join(s.log, "\n"))
		}
	}
}

type schedule struct {
	t     *testing.T
	rnd   *rand.Rand
	b     propBackend
	nodes []*node

	hist    []*Event // every good entry, ascending
	trimmed int      // hist[:trimmed] are deleted from the stream
	conns   []*propConn
	resumes []ID // ids clients have stored (events, caught_up.last)
	log     []string
	st      *propStats
}

type propStats struct {
	conns, backfill, ahead, gaps, slow, events, cursors, conservative int
}

// node is one bridge instance: its Hub and how far its ingest got.
type node struct {
	h        *Hub
	name     string
	ingested int // hist[:ingested] went through Append (or Warm)
}

type propConn struct {
	n         *node
	tc        *tconn
	name      string
	user      string
	groups    []string
	types     TypeFilter
	p         ID
	requested ID
	catchUp   ID
	upLast    ID
	lost      map[ID]bool
	wantGap   bool
	mayGap    bool // the server does not report max-deleted-entry-id: a gap may be reported conservatively
	oldest    ID
	fromStore bool // placed before the window's complete id
	closed    bool // Closed by the test
	slow      bool // closed with 1013
}

var (
	propUsers  = []string{"u1", "u2", "u3"}
	propGroups = []string{"g1", "g2", "g1x"}
	propTo     = []string{"user:u1", "user:u2", "user:u3", "user:u1x", "group:g1", "group:g2", "group:g1x", "group:g", "*"}
	propTypes  = []string{"a.x", "a.y", "b"}
	propFilter = []string{"", "a.*", "b", "a.x,b", "*"}
)

func (s *schedule) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf(format, args...))
}

func (s *schedule) produce() {
	if s.rnd.IntN(12) == 0 {
		id := s.b.AddBad()
		s.logf("bad %s", id)
		return
	}
	n := 1 + s.rnd.IntN(3)
	items := make([]string, n)
	for i := range items {
		items[i] = propTo[s.rnd.IntN(len(propTo))]
	}
	ev := s.b.Add(s.t, strings.Join(items, ","), propTypes[s.rnd.IntN(len(propTypes))], `{"n":`+strconv.Itoa(len(s.hist))+`}`)
	s.hist = append(s.hist, ev)
	s.logf("add %s to=%s type=%s", ev.ID, ev.To, ev.Type)
}

func (s *schedule) run() error {
	cfg := Config{
		WindowBytes:     int64(200 * (2 + s.rnd.IntN(12))),
		BackfillPage:    1 + s.rnd.IntN(4),
		BackfillBytes:   int64(300 * (1 + s.rnd.IntN(8))),
		BackfillWorkers: 1 + s.rnd.IntN(2),
		CursorInterval:  time.Hour,
	}
	// A stream that existed before the node started, maybe trimmed already.
	for range s.rnd.IntN(12) {
		s.produce()
	}
	if len(s.hist) > 0 && s.rnd.IntN(2) == 0 {
		k := s.rnd.IntN(len(s.hist))
		s.trimHist(k)
	}
	// One or two nodes over the same stream, each with its own window and
	// ingest progress; clients move between them.
	for i := range 1 + s.rnd.IntN(2) {
		if i > 0 {
			cfg.WindowBytes = int64(200 * (2 + s.rnd.IntN(12)))
		}
		h, err := NewHub(cfg, s.b)
		if err != nil {
			return err
		}
		defer func() {
			if err := h.Close(); err != nil {
				s.t.Errorf("Close: %v", err)
			}
		}()
		if _, err := h.Warm(context.Background()); err != nil {
			return err
		}
		s.nodes = append(s.nodes, &node{h: h, name: "n" + strconv.Itoa(i), ingested: len(s.hist)})
		s.logf("n%d warm window=%d page=%d head=%s", i, cfg.WindowBytes, cfg.BackfillPage, h.Head())
	}

	steps := 20 + s.rnd.IntN(60)
	for range steps {
		var err error
		switch r := s.rnd.IntN(20); {
		case r < 5:
			s.produce()
		case r < 9:
			err = s.ingest(s.nodes[s.rnd.IntN(len(s.nodes))], 1+s.rnd.IntN(3))
		case r < 10:
			s.waitPages()
			ingested := len(s.hist)
			for _, n := range s.nodes {
				ingested = min(ingested, n.ingested)
			}
			s.trimHist(s.trimmed + s.rnd.IntN(ingested-s.trimmed+1))
		case r < 13:
			err = s.connect()
		case r < 18:
			err = s.pullOne()
		default:
			s.disconnect()
		}
		if err != nil {
			return err
		}
	}
	for _, n := range s.nodes {
		if err := s.ingest(n, len(s.hist)); err != nil {
			return err
		}
	}
	for _, c := range s.conns {
		if !c.closed && !c.slow {
			if err := s.pull(c, true); err != nil {
				return err
			}
		}
	}
	for _, c := range s.conns {
		s.st.conns++
		{
			s.st.events += len(c.tc.ids())
		}
		if c.wantGap {
			s.st.gaps++
		}
		s.st.cursors += len(c.tc.controls("cursor"))
		if c.slow {
			s.st.slow++
		}
		if c.catchUp.Less(c.p) {
			s.st.ahead++
		}
		if c.fromStore {
			s.st.backfill++
		}
		if err := s.verify(c); err != nil {
			return fmt.Errorf("%s: %w\nreceived: %s\nstate: %s", c.name, err, c.tc.summary(), c.tc.c.debugString())
		}
	}
	return nil
}

// trimHist deletes the stream up to hist[k-1] (and any bad entries before).
func (s *schedule) info() StreamInfo {
	info, err := s.b.Info(context.Background())
	if err != nil {
		s.t.Fatalf("Info: %v", err)
	}
	return info
}

func (s *schedule) trimHist(k int) {
	if k <= s.trimmed {
		return
	}
	last := s.hist[k-1].ID
	s.b.TrimThrough(last)
	s.trimmed = k
	s.logf("trim through %s", last)
}

// waitPages lets pending backfill reads finish so a trim does not race them
// (a trim between XRANGE and XINFO is handled conservatively, by 1013).
func (s *schedule) waitPages() {
	for _, n := range s.nodes {
		waitFor(s.t, 5*time.Second, "backfill pages", func() bool {
			n.h.bf.mu.Lock()
			defer n.h.bf.mu.Unlock()
			return len(n.h.bf.pending) == 0
		})
	}
}

func (s *schedule) ingest(n *node, k int) error {
	for ; k > 0 && n.ingested < len(s.hist); k-- {
		ev := s.hist[n.ingested]
		if !n.h.Append(ev) {
			return fmt.Errorf("%s: Append(%s) = false for a new event", n.name, ev.ID)
		}
		n.ingested++
		if s.rnd.IntN(6) == 0 {
			old := s.hist[s.rnd.IntN(n.ingested)]
			if n.h.Append(old) {
				return fmt.Errorf("%s: redelivered Append(%s) = true", n.name, old.ID)
			}
		}
	}
	s.logf("%s ingested %d head=%s", n.name, n.ingested, n.h.Head())
	return nil
}

func (n *node) windowComplete() ID {
	n.h.w.mu.RLock()
	defer n.h.w.mu.RUnlock()
	return n.h.w.complete
}

func (n *node) windowOldest() (ID, bool) {
	n.h.w.mu.RLock()
	defer n.h.w.mu.RUnlock()
	return n.h.w.oldestLocked()
}

func (s *schedule) connect() error {
	c := &propConn{name: "c" + strconv.Itoa(len(s.conns))}
	c.user = propUsers[s.rnd.IntN(len(propUsers))]
	for _, g := range propGroups {
		if s.rnd.IntN(2) == 0 {
			c.groups = append(c.groups, g)
		}
	}
	if s.rnd.IntN(5) == 0 && len(c.groups) > 0 {
		c.groups = append(c.groups, c.groups[0]) // named twice
	}
	filter := propFilter[s.rnd.IntN(len(propFilter))]
	c.types, _ = ParseTypeFilter(filter)
	c.n = s.nodes[s.rnd.IntN(len(s.nodes))]
	head := c.n.h.Head()
	info := s.info()
	lastGen := info.LastGeneratedID
	var query, header string
	mode := ResumeLive
	switch r := s.rnd.IntN(10); {
	case r < 2:
	case r < 5 && len(s.resumes) > 0:
		mode, c.p = ResumeAfterID, s.resumes[s.rnd.IntN(len(s.resumes))]
	case r < 7:
		mode = ResumeAfterID
		if len(s.hist) > 0 && s.rnd.IntN(4) > 0 {
			c.p = s.hist[s.rnd.IntN(len(s.hist))].ID
		}
	case r < 8:
		mode, c.p = ResumeAfterID, lastGen // maybe ahead of this node's head
	case r < 9 && len(s.hist) > 0:
		mode = ResumeSince
		ms := s.hist[s.rnd.IntN(len(s.hist))].ID.Ms + uint64(s.rnd.IntN(2))
		c.requested = ID{Ms: ms}
		c.p = prevID(c.requested)
		query = "since=" + strconv.FormatUint(ms, 10)
	default:
		// A future id is refused.
		q := "last_event_id=" + lastGen.Next().String()
		if _, err := tryAccept(c.n.h, c.user, c.groups, q, ""); err == nil || !strings.Contains(err.Error(), "id is in the future") {
			return fmt.Errorf("future id %s accepted or wrong error: %v", lastGen.Next(), err)
		}
		return nil
	}
	if mode == ResumeAfterID {
		c.requested = c.p
		if s.rnd.IntN(3) == 0 {
			header = c.p.String()
		} else {
			query = "last_event_id=" + c.p.String()
		}
	}
	if filter != "" {
		if query != "" {
			query += "&"
		}
		query += "types=" + filter
	}
	if mode == ResumeLive {
		c.p = head
	}
	c.catchUp, c.upLast = head, head
	if mode == ResumeAfterID && head.Less(c.p) {
		c.upLast = c.p
	}
	// What is gone for good at connect: trimmed and not in the window.
	complete := c.n.windowComplete()
	c.lost = map[ID]bool{}
	for _, e := range s.hist[:s.trimmed] {
		if c.p.Less(e.ID) && !complete.Less(e.ID) {
			c.lost[e.ID] = true
		}
	}
	c.wantGap = len(c.lost) > 0
	c.mayGap = !info.MaxDeletedKnown
	if c.wantGap || c.mayGap {
		// The oldest id still deliverable: in the stream or in the window.
		have := false
		if info.Length > 0 {
			c.oldest, have = info.FirstID, true
		}
		if o, ok := c.n.windowOldest(); ok && c.p.Less(o) && (!have || o.Less(c.oldest)) {
			c.oldest, have = o, true
		}
		if !have {
			c.oldest = lastGen
		}
	}
	tc, err := tryAccept(c.n.h, c.user, c.groups, query, header)
	if err != nil {
		return fmt.Errorf("%s Accept(%q, %q): %w", c.name, query, header, err)
	}
	c.tc = tc
	c.fromStore = c.p.Less(complete)
	s.conns = append(s.conns, c)
	s.logf("%s connect %s user=%s groups=%v query=%q header=%q head=%s P=%s gap=%v",
		c.name, c.n.name, c.user, c.groups, query, header, head, c.p, c.wantGap)
	return nil
}

func (s *schedule) open() []*propConn {
	var out []*propConn
	for _, c := range s.conns {
		if !c.closed && !c.slow {
			out = append(out, c)
		}
	}
	return out
}

func (s *schedule) pullOne() error {
	open := s.open()
	if len(open) == 0 {
		return nil
	}
	return s.pull(open[s.rnd.IntN(len(open))], s.rnd.IntN(3) > 0)
}

func (s *schedule) pull(c *propConn, full bool) error {
	before := len(c.tc.frames)
	if s.rnd.IntN(4) == 0 {
		c.tc.c.wantCursor.Store(true) // as the cursor ticker does after silence
	}
	if full {
		c.tc.drain(s.t)
	} else {
		c.tc.pull(s.t, 1+s.rnd.IntN(300))
	}
	for _, f := range c.tc.frames[before:] {
		switch {
		case f.Control == "":
			id, _ := ParseID(f.ID)
			s.resumes = append(s.resumes, id)
		case f.Control == "caught_up" || f.Control == "cursor":
			id, _ := ParseID(f.Last)
			s.resumes = append(s.resumes, id)
		}
	}
	s.logf("%s pull full=%v got %d", c.name, full, len(c.tc.frames)-before)
	if code := c.tc.peer.closeCode(); code != 0 {
		if code != CloseTryAgainLater {
			return fmt.Errorf("%s closed with %d", c.name, code)
		}
		c.slow = true
		s.logf("%s closed 1013: %s", c.name, c.tc.peer.reason)
		return s.checkSlow(c)
	}
	return nil
}

// checkSlow: a 1013 is due only when an event the connection still needed
// (after what it received, addressed to it, of a type it wants) left the
// window.
func (s *schedule) checkSlow(c *propConn) error {
	known := c.p
	for _, id := range c.tc.ids() {
		known, _ = ParseID(id)
	}
	complete := c.n.windowComplete()
	// Trimmed during replay: the lost entries are gone, so whether they were
	// for this connection is unknowable; any lost entry after known will do.
	anyRecipient := c.tc.peer.reason == reasonTrimmed
	for _, e := range s.hist[:c.n.ingested] {
		if known.Less(e.ID) && !c.lost[e.ID] && !complete.Less(e.ID) &&
			(anyRecipient || addressedTo(e, c.user, c.groups) && c.types.Match(e.Type)) {
			return nil
		}
	}
	return fmt.Errorf("%s closed with 1013 though nothing it needed left the window (known %s, complete %s)", c.name, known, complete)
}

func (s *schedule) disconnect() {
	open := s.open()
	if len(open) == 0 {
		return
	}
	c := open[s.rnd.IntN(len(open))]
	c.tc.c.Closed()
	c.closed = true
	s.logf("%s closed", c.name)
}

func addressedTo(e *Event, user string, groups []string) bool {
	found := false
	ForEachRecipient(e.To, func(kind RecipientKind, name string) {
		switch kind {
		case KindBroadcast:
			found = true
		case KindUser:
			found = found || name == user
		case KindGroup:
			found = found || slices.Contains(groups, name)
		}
	})
	return found
}

func (s *schedule) verify(c *propConn) error {
	var want []string
	wantUpTo := 0 // events at or before catchUp
	for _, e := range s.hist {
		if c.p.Less(e.ID) && !c.lost[e.ID] && addressedTo(e, c.user, c.groups) && c.types.Match(e.Type) {
			want = append(want, e.ID.String())
			if !c.catchUp.Less(e.ID) {
				wantUpTo++
			}
		}
	}
	frames := c.tc.frames
	if c.mayGap && !c.wantGap && len(frames) > 0 && frames[0].Control == "gap" {
		// Conservative gap without max-deleted-entry-id: allowed, but it
		// must still name the right ids and nothing may be skipped for it.
		if frames[0].Requested != c.requested.String() || frames[0].Oldest != c.oldest.String() {
			return fmt.Errorf("conservative gap %v, want requested %s oldest %s", frames[0], c.requested, c.oldest)
		}
		frames = frames[1:]
		s.st.conservative++
	}
	if c.wantGap {
		if len(frames) == 0 && (c.closed || c.slow) {
			return nil
		}
		if len(frames) == 0 || frames[0].Control != "gap" {
			return fmt.Errorf("want a gap frame first")
		}
		if frames[0].Requested != c.requested.String() || frames[0].Oldest != c.oldest.String() {
			return fmt.Errorf("gap %v, want requested %s oldest %s", frames[0], c.requested, c.oldest)
		}
		frames = frames[1:]
	}
	var got []string
	caughtAt := -1
	type cursorAt struct {
		k    int
		last ID
	}
	var cursors []cursorAt
	for _, f := range frames {
		switch f.Control {
		case "":
			got = append(got, f.ID)
		case "caught_up":
			if caughtAt >= 0 {
				return fmt.Errorf("caught_up twice")
			}
			caughtAt = len(got)
			if f.Last != c.upLast.String() {
				return fmt.Errorf("caught_up.last %s, want %s", f.Last, c.upLast)
			}
		case "cursor":
			if caughtAt < 0 {
				return fmt.Errorf("cursor frame before caught_up")
			}
			id, err := ParseID(f.Last)
			if err != nil {
				return fmt.Errorf("cursor frame: %v", err)
			}
			cursors = append(cursors, cursorAt{len(got), id})
		default:
			return fmt.Errorf("unexpected frame %v", f)
		}
	}
	if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
		return fmt.Errorf("events\n got %v\nwant %v", got, want)
	}
	if !c.closed && !c.slow {
		if len(got) != len(want) {
			return fmt.Errorf("missing events\n got %v\nwant %v", got, want)
		}
		if caughtAt < 0 {
			return fmt.Errorf("no caught_up")
		}
	}
	// Resuming from a cursor frame's last loses nothing and repeats nothing:
	// exactly the wanted events up to it came before it.
	for _, cf := range cursors {
		n := 0
		for _, id := range want {
			if p, _ := ParseID(id); !cf.last.Less(p) {
				n++
			}
		}
		if n != cf.k {
			return fmt.Errorf("cursor %s after %d events, but %d wanted events are at or before it", cf.last, cf.k, n)
		}
	}
	if caughtAt >= 0 && caughtAt != wantUpTo {
		return fmt.Errorf("caught_up after %d events, want after %d (head at connect %s)", caughtAt, wantUpTo, c.catchUp)
	}
	return nil
}
