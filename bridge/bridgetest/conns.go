package bridgetest

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/notifybridge/notifybridge/bridge"
)

// The schedule's connections: how they connect (by each resume mode, on
// either node), what the model expects of each at connect, and pulls.

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
