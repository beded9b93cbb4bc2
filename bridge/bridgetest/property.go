// Package bridgetest holds the randomized property test of bridge's delivery
// core as a runner over any bridge.Store, so the same schedules run against
// bridge's in-memory fake and, from handlers' tests, against a real
// redis-server through handlers.Store. It uses only bridge's exported API.
package bridgetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/bridge"
)

// Backend is the stream under the property test: the Store the hubs read,
// and the producer's and the trimmer's side of the same stream.
type Backend interface {
	bridge.Store
	// Add appends an entry (XADD) and returns it as the decoder builds it,
	// with the id the stream gave it.
	Add(tb testing.TB, to, typ, data string) *bridge.Event
	// AddBad appends an entry that does not decode.
	AddBad() bridge.ID
	// TrimThrough deletes every entry with an id <= last (XTRIM MINID
	// last.Next()).
	TrimThrough(last bridge.ID)
	// Flush loses the whole stream, as Redis restarted without its data
	// does: the stream starts over, reporting nothing generated and nothing
	// deleted. Ids added after it are above every lost one.
	Flush()
}

// Options configure Run.
type Options struct {
	// N is the number of schedules (at most 300 with -short). The
	// environment overrides it: BRIDGE_PROP_N=<n>.
	N int
	// NewBackend returns an empty stream for one schedule.
	NewBackend func(tb testing.TB, rnd *rand.Rand) Backend
	// ConservativeGaps says the backend's Info may report a MaxDeletedID
	// later than the newest entry really deleted (handlers.Store on Redis 7
	// derives it from the first entry, since Redis does not count trimming
	// in max-deleted-entry-id). A gap frame is then allowed where none is
	// due, as without MaxDeletedKnown, provided it names the right ids.
	ConservativeGaps bool
	// Describe, when set, adds a cursor's internal state to a failure.
	Describe func(*bridge.Cursor) string
	// RequestCursor, when set, is called before one pull in four to ask for
	// a cursor frame, as the cursor ticker does after cursor_interval of
	// silence (bridge's own tests can; the ticker's flag is not exported).
	// When nil, half the schedules run the Hub's ticker with a 1 ms
	// cursor_interval instead.
	RequestCursor func(*bridge.Cursor)
}

// Run runs the property test: schedules in which producers append targeted
// and broadcast events (and undecodable entries), one or two nodes warm from
// the stream and ingest it (with redeliveries), the stream is trimmed,
// clients connect, pull slowly or fast, disconnect and resume from a stored
// id, caught_up.last, a time or the head, on either node, and the windows are
// small enough to evict. For every connection the events received equal the
// filtered stream after its resume point minus what was gone at connect (in
// neither the stream nor the node's window), in order without duplicates;
// gap is sent exactly by the contract's rule; caught_up once in the right
// place; cursor frames only where a resume from them loses and repeats
// nothing; 1013 only when an event it still needed fell out of the window.
//
// What a node's window holds is not read from its internals: the window
// holds a contiguous run of the node's newest ingested events, whose length
// the Hub reports through Hooks.WindowSize after Warm and each Append.
//
// Redis may also lose the whole stream (Flush) while nodes hold events; a node
// running then is told (GroupRecreated) before it ingests again, and nodes may
// restart, warming from whatever the stream holds. The rule stays the same: a
// gap exactly for events in neither the stream nor the node's window. Two
// cases are knowable only conservatively, and may get a gap that names the
// right ids but skips nothing: a resume from the last lost id (nothing after
// it was lost, but the stream cannot say), and a since resume on a node that
// has not seen the loss, which may also get no gap at all (no id of the lost
// stream tells it the stream ever held more; docs/reliability.md). Before a
// flush every node has ingested the whole stream: entries Redis loses before
// any node read them are unknowable to every node.
//
// A failure prints its seed; BRIDGE_PROP_SEED=<seed> replays that schedule
// alone (the operations are the same; backfill timing may differ).
func Run(t *testing.T, o Options) {
	n := o.N
	if testing.Short() {
		n = min(n, 300)
	}
	if s := os.Getenv("BRIDGE_PROP_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatalf("BRIDGE_PROP_N: %v", err)
		}
	}
	seed0 := uint64(time.Now().UnixNano())
	if s := os.Getenv("BRIDGE_PROP_SEED"); s != "" {
		var err error
		if seed0, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("BRIDGE_PROP_SEED: %v", err)
		}
		n = 1
	}
	var st stats
	start := time.Now()
	defer func() {
		t.Logf("%d schedules from seed %d in %v: %d connections, %d resumed from Redis, %d ahead of the head, %d gaps, %d closed 1013, %d events delivered, %d cursor frames, %d conservative gaps",
			st.schedules, seed0, time.Since(start).Round(time.Millisecond), st.conns, st.backfill, st.ahead, st.gaps, st.slow, st.events, st.cursors, st.conservative)
	}()
	for i := range n {
		seed := seed0 + uint64(i)
		rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		s := &schedule{t: t, rnd: rnd, b: o.NewBackend(t, rnd), o: &o, st: &st}
		err := s.run()
		st.schedules++
		if err != nil {
			t.Fatalf("schedule failed; replay with BRIDGE_PROP_SEED=%d go test -run '^%s$'\n%v\nlog:\n%s",
				seed, t.Name(), err, strings.Join(s.log, "\n"))
		}
	}
}

type schedule struct {
	t     *testing.T
	rnd   *rand.Rand
	b     Backend
	o     *Options
	nodes []*node

	hist    []*bridge.Event // every good entry, ascending
	trimmed int             // hist[:trimmed] are deleted from the stream
	// flushedUpTo is the stream's last generated id before the latest Flush
	// (zero when none): every id at or below it is gone from the stream.
	flushedUpTo bridge.ID
	cfg         bridge.Config
	conns       []*propConn
	resumes     []bridge.ID // ids clients have stored (events, caught_up.last, cursor.last)
	log         []string
	st          *stats
}

type stats struct {
	schedules, conns, backfill, ahead, gaps, slow, events, cursors, conservative int
}

// node is one bridge instance: its Hub, how far its ingest got, and what its
// hooks observed.
type node struct {
	h        *bridge.Hub
	name     string
	ingested int // hist[:ingested] went through Append (or Warm)
	obs      *observer
	// lossPending: Redis lost the stream and the node's ingest has not yet
	// noticed (it calls GroupRecreated before it ingests again).
	lossPending bool
	// lostBefore: the flushedUpTo when the node started: nothing tells it
	// what the streams lost before it held.
	lostBefore bridge.ID
	// emptyUntil: the node warmed from an empty stream and this is the first
	// event it appended since (zero: none yet); an id below it may be from
	// a lost stream or an undecodable entry, which it cannot tell apart.
	emptyWarm  bool
	emptyUntil bridge.ID
}

// observer is a node's Hooks: the window's size after the last change, where
// the last connection's replay came from and why the last 1013 was sent.
// Every hook runs synchronously in Warm, Append, Accept or Pull, which the
// schedule calls from the test goroutine.
type observer struct {
	bridge.NopHooks
	mu      sync.Mutex
	events  int
	resumed bridge.ResumeSource
	cause   string
}

func (o *observer) WindowSize(events int, _ int64) {
	o.mu.Lock()
	o.events = events
	o.mu.Unlock()
}

func (o *observer) Resumed(from bridge.ResumeSource) {
	o.mu.Lock()
	o.resumed = from
	o.mu.Unlock()
}

func (o *observer) SlowClosed(cause string) {
	o.mu.Lock()
	o.cause = cause
	o.mu.Unlock()
}

// windowFirst is the index in hist of the oldest event the node's window
// holds (== ingested when it holds none): it holds hist[first:ingested].
func (s *schedule) windowFirst(n *node) int {
	n.obs.mu.Lock()
	defer n.obs.mu.Unlock()
	return n.ingested - n.obs.events
}

type propConn struct {
	n         *node
	tc        *conn
	name      string
	user      string
	groups    []string
	types     bridge.TypeFilter
	p         bridge.ID
	requested bridge.ID
	catchUp   bridge.ID
	upLast    bridge.ID
	lost      map[bridge.ID]bool
	wantGap   bool
	mayGap    bool // a gap may be reported conservatively
	oldest    bridge.ID
	since     bool // resumed with since
	// blind: the stream does not report deletions and Redis has lost data:
	// any entry it holds may follow lost ones, so a replay may be closed
	// (1013, replay_trimmed) where nothing was lost.
	blind  bool
	closed bool // Closed by the test
	slow   bool // closed with 1013
}

var (
	propUsers  = []string{"u1", "u2", "u3"}
	propGroups = []string{"g1", "g2", "g1x"}
	propTo     = []string{"user:u1", "user:u2", "user:u3", "user:u1x", "group:g1", "group:g2", "group:g1x", "group:g", "*"}
	propTypes  = []string{"a.x", "a.y", "b"}
	propFilter = []string{"", "a.*", "b", "a.x,b", "*"}
)

// Causes of Hooks.SlowClosed the schedule expects.
const (
	causeEvicted = "evicted"
	causeTrimmed = "replay_trimmed"
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
	cfg := bridge.Config{
		WindowBytes:     int64(200 * (2 + s.rnd.IntN(12))),
		BackfillPage:    1 + s.rnd.IntN(4),
		BackfillBytes:   int64(300 * (1 + s.rnd.IntN(8))),
		BackfillWorkers: 1 + s.rnd.IntN(2),
		CursorInterval:  time.Hour,
	}
	if s.o.RequestCursor == nil && s.rnd.IntN(2) == 0 {
		// The ticker asks silent connections for cursor frames.
		cfg.CursorInterval = time.Millisecond
	}
	// A stream that existed before the node started, maybe trimmed already.
	for range s.rnd.IntN(12) {
		s.produce()
	}
	if len(s.hist) > 0 && s.rnd.IntN(2) == 0 {
		s.trimHist(s.rnd.IntN(len(s.hist)))
	}
	s.cfg = cfg
	defer func() {
		for _, n := range s.nodes {
			if err := n.h.Close(); err != nil {
				s.t.Errorf("Close: %v", err)
			}
		}
	}()
	// One or two nodes over the same stream, each with its own window and
	// ingest progress; clients move between them.
	for i := range 1 + s.rnd.IntN(2) {
		n, err := s.startNode("n"+strconv.Itoa(i), i > 0)
		if err != nil {
			return err
		}
		s.nodes = append(s.nodes, n)
	}

	steps := 20 + s.rnd.IntN(60)
	for range steps {
		var err error
		switch r := s.rnd.IntN(20); {
		case r == 0 && s.rnd.IntN(8) == 0:
			err = s.flush()
		case r == 1 && s.rnd.IntN(6) == 0:
			err = s.restart(s.rnd.IntN(len(s.nodes)))
		case r < 5:
			s.produce()
		case r < 9:
			err = s.ingest(s.nodes[s.rnd.IntN(len(s.nodes))], 1+s.rnd.IntN(3))
		case r < 10:
			err = s.waitPages()
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
		s.st.events += len(c.tc.ids())
		if c.wantGap {
			s.st.gaps++
		}
		s.st.cursors += c.tc.controls("cursor")
		if c.slow {
			s.st.slow++
		}
		if c.catchUp.Less(c.p) {
			s.st.ahead++
		}
		if err := s.verify(c); err != nil {
			state := ""
			if s.o.Describe != nil {
				state = "\nstate: " + s.o.Describe(c.tc.c)
			}
			return fmt.Errorf("%s: %w\nreceived: %s%s", c.name, err, c.tc.summary(), state)
		}
	}
	return nil
}

// startNode starts a node over the stream as it is now: a Hub warmed from it
// (with its own window size unless first).
func (s *schedule) startNode(name string, ownWindow bool) (*node, error) {
	cfg := s.cfg
	if ownWindow {
		cfg.WindowBytes = int64(200 * (2 + s.rnd.IntN(12)))
	}
	obs := &observer{}
	cfg.Hooks = obs
	h, err := bridge.NewHub(cfg, s.b)
	if err != nil {
		return nil, err
	}
	if _, err := h.Warm(context.Background()); err != nil {
		_ = h.Close()
		return nil, err
	}
	n := &node{h: h, name: name, ingested: len(s.hist), obs: obs, lostBefore: s.flushedUpTo,
		emptyWarm: s.info().Length == 0}
	s.logf("%s warm window=%d page=%d cursor=%v head=%s holds %d", name, cfg.WindowBytes, cfg.BackfillPage, cfg.CursorInterval, h.Head(), n.ingested-s.windowFirst(n))
	return n, nil
}

// restart replaces node i by a new process of the same name: its
// connections end, and the new Hub warms from the stream as it is now.
func (s *schedule) restart(i int) error {
	old := s.nodes[i]
	for _, c := range s.conns {
		if c.n == old && !c.closed && !c.slow {
			c.tc.c.Closed()
			c.closed = true
		}
	}
	if err := old.h.Close(); err != nil {
		return err
	}
	s.logf("%s restart", old.name)
	n, err := s.startNode(old.name, true)
	if err != nil {
		return err
	}
	s.nodes[i] = n
	return nil
}

// flush: Redis loses the stream. Every node has ingested it all first (what
// Redis loses before any node read it is unknowable). A running node notices
// before it ingests again, sometimes at once, before the next entry.
func (s *schedule) flush() error {
	for _, n := range s.nodes {
		if err := s.ingest(n, len(s.hist)); err != nil {
			return err
		}
	}
	if err := s.waitPages(); err != nil {
		return err
	}
	s.flushedUpTo = later(s.flushedUpTo, s.info().LastGeneratedID)
	s.b.Flush()
	s.trimmed = len(s.hist)
	s.logf("flush (lost up to %s)", s.flushedUpTo)
	for _, n := range s.nodes {
		n.lossPending = true
		if s.rnd.IntN(2) == 0 {
			s.groupRecreated(n)
		}
	}
	return nil
}

func (s *schedule) groupRecreated(n *node) {
	at := n.h.GroupRecreated()
	n.lossPending = false
	s.logf("%s group recreated at %s", n.name, at)
}

func (s *schedule) info() bridge.StreamInfo {
	info, err := s.b.Info(context.Background())
	if err != nil {
		s.t.Fatalf("Info: %v", err)
	}
	return info
}

// trimHist deletes the stream up to hist[k-1] (and any bad entries before).
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
// (a trim between a page's XRANGE and XINFO is handled conservatively, by
// 1013, which the schedule cannot tell from a wrong one).
func (s *schedule) waitPages() error {
	for _, n := range s.nodes {
		deadline := time.Now().Add(5 * time.Second)
		for n.h.PendingReads() > 0 {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: backfill pages still pending after 5s", n.name)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	return nil
}

func (s *schedule) ingest(n *node, k int) error {
	if n.lossPending && n.ingested < len(s.hist) {
		s.groupRecreated(n)
	}
	for ; k > 0 && n.ingested < len(s.hist); k-- {
		ev := s.hist[n.ingested]
		if !n.h.Append(ev) {
			return fmt.Errorf("%s: Append(%s) = false for a new event", n.name, ev.ID)
		}
		if n.emptyWarm && n.emptyUntil.IsZero() {
			n.emptyUntil = ev.ID
		}
		n.ingested++
		if s.rnd.IntN(6) == 0 {
			old := s.hist[s.rnd.IntN(n.ingested)]
			if n.h.Append(old) {
				return fmt.Errorf("%s: redelivered Append(%s) = true", n.name, old.ID)
			}
		}
	}
	s.logf("%s ingested %d head=%s holds %d", n.name, n.ingested, n.h.Head(), n.ingested-s.windowFirst(n))
	return nil
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
	c.types, _ = bridge.ParseTypeFilter(filter)
	c.n = s.nodes[s.rnd.IntN(len(s.nodes))]
	head := c.n.h.Head()
	info := s.info()
	lastGen := info.LastGeneratedID
	var query, header string
	mode := bridge.ResumeLive
	switch r := s.rnd.IntN(10); {
	case r < 2:
	case r < 5 && len(s.resumes) > 0:
		mode, c.p = bridge.ResumeAfterID, s.resumes[s.rnd.IntN(len(s.resumes))]
	case r < 7:
		mode = bridge.ResumeAfterID
		if len(s.hist) > 0 && s.rnd.IntN(4) > 0 {
			c.p = s.hist[s.rnd.IntN(len(s.hist))].ID
		}
	case r < 8:
		mode, c.p = bridge.ResumeAfterID, lastGen // maybe ahead of this node's head
	case r < 9 && len(s.hist) > 0:
		mode, c.since = bridge.ResumeSince, true
		ms := s.hist[s.rnd.IntN(len(s.hist))].ID.Ms + uint64(s.rnd.IntN(2))
		c.requested = bridge.ID{Ms: ms}
		c.p = c.requested.Prev()
		query = "since=" + strconv.FormatUint(ms, 10)
	default:
		// A future id is refused: beyond the stream's last generated id and
		// this node's head (which is beyond it after Redis lost data).
		future := later(lastGen, head).Next()
		q := "last_event_id=" + future.String()
		if _, err := tryAccept(c.n.h, c.user, c.groups, q, ""); err == nil || !strings.Contains(err.Error(), "id is in the future") {
			return fmt.Errorf("future id %s accepted or wrong error: %v", future, err)
		}
		return nil
	}
	if mode == bridge.ResumeAfterID && head.Less(c.p) && lastGen.Less(c.p) {
		// An id of a stream Redis lost, beyond what the new one generated.
		q := "last_event_id=" + c.p.String()
		if _, err := tryAccept(c.n.h, c.user, c.groups, q, ""); err == nil || !strings.Contains(err.Error(), "id is in the future") {
			return fmt.Errorf("lost id %s beyond the new stream accepted or wrong error: %v", c.p, err)
		}
		return nil
	}
	if mode == bridge.ResumeAfterID {
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
	c.catchUp, c.upLast = head, head
	if mode == bridge.ResumeLive {
		// What comes after the head; a node started after Redis lost the
		// stream has a head below the lost ids, which it never serves.
		c.p = later(head, s.flushedUpTo)
	}
	if mode == bridge.ResumeAfterID && head.Less(c.p) {
		c.upLast = c.p
	}
	// What is gone for good at connect: trimmed and not in the window.
	first := s.windowFirst(c.n)
	c.lost = map[bridge.ID]bool{}
	for _, e := range s.hist[:min(s.trimmed, first)] {
		if c.p.Less(e.ID) {
			c.lost[e.ID] = true
		}
	}
	c.wantGap = len(c.lost) > 0
	c.mayGap = !info.MaxDeletedKnown || s.o.ConservativeGaps
	c.blind = !info.MaxDeletedKnown && !s.flushedUpTo.IsZero()
	if !s.flushedUpTo.IsZero() && !s.flushedUpTo.Less(c.p) {
		// The resume point is in a stream Redis lost.
		unknowable := true
		for id := range c.lost {
			unknowable = unknowable && !c.n.lostBefore.Less(id)
		}
		switch {
		case (c.since || c.p.IsZero()) && unknowable:
			// A time or 0-0 is no id of a lost stream: nothing tells a node
			// started after the loss that the stream held more.
			c.wantGap, c.mayGap = false, true
		case !c.since && !c.p.IsZero():
			c.mayGap = true // the last lost id may get a gap
		}
	}
	if mode == bridge.ResumeAfterID && c.n.emptyWarm && !c.p.IsZero() && c.p.Less(c.n.emptyUntil) {
		c.mayGap = true
	}
	if c.wantGap || c.mayGap {
		// The oldest id still deliverable: in the stream or in the window.
		have := false
		if info.Length > 0 {
			c.oldest, have = info.FirstID, true
		}
		if first < c.n.ingested {
			if o := s.hist[first].ID; c.p.Less(o) && (!have || o.Less(c.oldest)) {
				c.oldest, have = o, true
			}
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
	c.n.obs.mu.Lock()
	if c.n.obs.resumed == bridge.ResumeFromStore {
		s.st.backfill++
	}
	c.n.obs.mu.Unlock()
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
	c.n.obs.mu.Lock()
	c.n.obs.cause = ""
	c.n.obs.mu.Unlock()
	if s.o.RequestCursor != nil && s.rnd.IntN(4) == 0 {
		s.o.RequestCursor(c.tc.c)
	}
	if full {
		c.tc.drain(s.t)
	} else {
		c.tc.pull(s.t, 1+s.rnd.IntN(300))
	}
	for _, f := range c.tc.frames[before:] {
		switch f.Control {
		case "":
			id, _ := bridge.ParseID(f.ID)
			s.resumes = append(s.resumes, id)
		case "caught_up", "cursor":
			id, _ := bridge.ParseID(f.Last)
			s.resumes = append(s.resumes, id)
		}
	}
	s.logf("%s pull full=%v got %d", c.name, full, len(c.tc.frames)-before)
	if code, reason := c.tc.peer.Closed(); code != 0 {
		if code != bridge.CloseTryAgainLater {
			return fmt.Errorf("%s closed with %d", c.name, code)
		}
		c.slow = true
		c.n.obs.mu.Lock()
		cause := c.n.obs.cause
		c.n.obs.mu.Unlock()
		s.logf("%s closed 1013 (%s): %s", c.name, cause, reason)
		return s.checkSlow(c, cause)
	}
	return nil
}

// checkSlow: a 1013 is due only when an event the connection still needed
// (after what it received, addressed to it, of a type it wants) left the
// window.
func (s *schedule) checkSlow(c *propConn, cause string) error {
	var anyRecipient bool
	switch cause {
	case causeEvicted:
	case causeTrimmed:
		// Trimmed during replay: the lost entries are gone, so whether they
		// were for this connection is unknowable; any lost entry after known
		// will do.
		anyRecipient = true
		if c.blind {
			return nil
		}
	default:
		return fmt.Errorf("%s closed with 1013, cause %q", c.name, cause)
	}
	known := c.p
	for _, id := range c.tc.ids() {
		known, _ = bridge.ParseID(id)
	}
	first := s.windowFirst(c.n)
	for _, e := range s.hist[:first] {
		if known.Less(e.ID) && !c.lost[e.ID] &&
			(anyRecipient || addressedTo(e, c.user, c.groups) && c.types.Match(e.Type)) {
			return nil
		}
	}
	return fmt.Errorf("%s closed with 1013 (%s) though nothing it needed left the window (known %s, window from hist[%d])", c.name, cause, known, first)
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

func later(a, b bridge.ID) bridge.ID {
	if a.Less(b) {
		return b
	}
	return a
}

func addressedTo(e *bridge.Event, user string, groups []string) bool {
	found := false
	bridge.ForEachRecipient(e.To, func(kind bridge.RecipientKind, name string) {
		switch kind {
		case bridge.KindBroadcast:
			found = true
		case bridge.KindUser:
			found = found || name == user
		case bridge.KindGroup:
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
		// A conservative gap: allowed, but it must still name the right ids
		// and nothing may be skipped for it.
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
		last bridge.ID
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
			id, err := bridge.ParseID(f.Last)
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
			if p, _ := bridge.ParseID(id); !cf.last.Less(p) {
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
