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

func later(a, b bridge.ID) bridge.ID {
	if a.Less(b) {
		return b
	}
	return a
}
