package bridge

import (
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// CloseTryAgainLater is the WebSocket close code for a connection that fell
// out of the replay window (contract §2): it resumes to catch up.
const CloseTryAgainLater = 1013

// Close reasons of CloseTryAgainLater; one line each, sent in the close frame.
const (
	reasonEvicted = "fell behind: events it still needed left the replay window; resume to catch up"
	reasonReplay  = "replay from Redis failed; resume later"
	reasonTrimmed = "history was trimmed during replay; resume to see the gap"
	causeEvicted  = "evicted"
	causeReplay   = "replay_failed"
	causeTrimmed  = "replay_trimmed"
)

// lagSample: Hooks.Lag observes one live pull in this many per connection.
const lagSample = 16

type cursorMode uint8

const (
	modeWindow   cursorMode = iota // reading the window's recipient lists
	modeBackfill                   // reading pages from Redis until the window covers pos
	modeDone                       // closed for falling behind, or the Hub closed
)

// Cursor is one connection's place in the stream. It implements the pool's
// Source: the drainer calls Pull for ready frames, Closed when the connection
// is gone. There is no frame queue; an idle connection costs this struct, one
// slot per recipient list and its place in their sets of readers.
//
// The fields below "owned by the drainer" are touched only by Pull (never
// concurrent with itself) and, before the first Pull can run, by Accept under
// window.mu; list contents they index are guarded by window.mu.
type Cursor struct {
	hub   *Hub
	peer  Peer
	types *TypeFilter // nil: every type
	// lists are the recipient lists it reads: its user's first, then its
	// groups' (sorted), broadcast last. The lists are fixed at Accept and
	// referenced until Closed; their next indexes are owned by the drainer.
	// The names come from the lists, so a connection holds no copy of them.
	lists []listCursor
	// resume is what the cursor needs until it has caught up and reads the
	// window: an idle connection does not carry it.
	resume *resumeState

	// Owned by the drainer.
	pos          ID // every event with an id <= pos was examined, and sent if due
	lastReported ID // newest id a frame sent carried
	mode         cursorMode
	caughtUp     bool
	lagTick      uint8 // counts live pulls, for sampling Hooks.Lag

	slot int32 // index in window.cursors; guarded by window.mu

	// Shared with the ticker.
	wantCursor atomic.Bool
	closed     atomic.Bool
	reported   atomic.Uint64 // Hub.appends when the client last learned pos
	quietSince atomic.Int64  // unix nanoseconds of the last frame
}

// listCursor is the cursor's place in one recipient list.
type listCursor struct {
	l    *plist
	next uint64 // absolute index of the first entry not examined
}

// resumeState is what a cursor needs from Accept until it has caught up and
// reads the window, and again if it falls behind into a replay from Redis.
// Owned by the drainer, like the cursor's position.
type resumeState struct {
	catchUpAt    ID // this node's head at connect
	caughtUpLast ID // what caught_up names: the head, or the client's own id beyond it
	gapFrame     []byte
	skipBelow    ID // after a gap: ids older than the gap's oldest are not sent
	// evictedUpTo is set when a cursor with a types filter fell behind: it
	// replays from Redis, and a due event at or before this id means it
	// missed one in the window (1013). Zero otherwise.
	evictedUpTo ID
	page        *page
	pageAt      int
}

// userID is the connection's user.
func (c *Cursor) userID() string { return c.lists[0].l.name }

// groupLists are the lists of the connection's groups, in name order.
func (c *Cursor) groupLists() []listCursor { return c.lists[1 : len(c.lists)-1] }

// wants reports whether the connection's types filter passes typ.
func (c *Cursor) wants(typ string) bool { return c.types == nil || c.types.Match(typ) }

// resuming returns the resume state, making it when absent (a caught-up
// cursor that fell behind and replays from Redis).
func (c *Cursor) resuming() *resumeState {
	if c.resume == nil {
		c.resume = &resumeState{}
	}
	return c.resume
}

// Pull appends the frames ready for the connection: a gap frame first when
// history was lost, then events in id order (each once, shared frames),
// caught_up once the events up to the head at connect are sent, and a cursor
// frame after cursor_interval of silence. It stops once about maxBytes were
// added (at least one frame when any is ready). While a Redis page is being
// read it returns nothing more; the peer is woken when the page arrives.
func (c *Cursor) Pull(bufs [][]byte, maxBytes int) [][]byte {
	if c.mode == modeDone || c.closed.Load() || c.hub.closed.Load() {
		return bufs
	}
	start, size := len(bufs), 0
	if r := c.resume; r != nil && r.gapFrame != nil {
		bufs = append(bufs, r.gapFrame)
		size += len(r.gapFrame)
		r.gapFrame = nil
	}
	w := c.hub.w
replay:
	locked := false
	for c.mode == modeBackfill {
		if size >= maxBytes && len(bufs) > start {
			return c.finish(bufs, start)
		}
		r := c.resuming()
		p := r.page
		if p == nil {
			p = c.hub.bf.request(c, c.pos)
			r.page, r.pageAt = p, 0
		}
		if !p.ready.Load() {
			return c.finish(bufs, start)
		}
		if p.err != nil {
			c.fail(causeReplay, reasonReplay)
			return c.finish(bufs, start)
		}
		if !p.last.IsZero() && !p.covers(c.pos) {
			r.page = nil // joined a read that ended before pos
			continue
		}
		w.mu.RLock()
		switch c.consumePageLocked(w, p, &bufs, &size, start, maxBytes) {
		case actSwitched:
			locked = true
		case actFull:
			w.mu.RUnlock()
			return c.finish(bufs, start)
		case actNextPage:
			w.mu.RUnlock()
			r.page = nil
		case actLost:
			w.mu.RUnlock()
			c.fail(causeTrimmed, reasonTrimmed)
			return c.finish(bufs, start)
		case actEvicted:
			w.mu.RUnlock()
			c.fail(causeEvicted, reasonEvicted)
			return c.finish(bufs, start)
		}
	}
	if !locked {
		w.mu.RLock()
	}
	for i := range c.lists {
		lc := &c.lists[i]
		if lc.next >= lc.l.base {
			continue
		}
		if !c.pos.Less(lc.l.evicted) {
			lc.next = lc.l.base // what left was not newer than pos
			continue
		}
		if c.types == nil {
			w.mu.RUnlock()
			c.fail(causeEvicted, reasonEvicted)
			return c.finish(bufs, start)
		}
		// Whether what left was of a type this connection wants is unknown:
		// read it back from Redis, and close only if it was.
		c.resuming().evictedUpTo = w.complete
		c.resume.page = nil
		c.mode = modeBackfill
		w.mu.RUnlock()
		goto replay
	}
	liveFrom := len(bufs)
	wasCaughtUp := c.caughtUp
	exhausted := false
	for {
		// Merge the lists: the smallest next id; an event in several lists
		// (user and group, or named twice) is the same *Event, advanced once.
		var ev *Event
		for _, lc := range c.lists {
			if lc.next < lc.l.end() {
				if e := w.eventLocked(lc.l.at(lc.next)); ev == nil || e.ID.Less(ev.ID) {
					ev = e
				}
			}
		}
		if ev == nil {
			exhausted = true
			break
		}
		if size >= maxBytes && len(bufs) > start {
			break
		}
		for i := range c.lists {
			lc := &c.lists[i]
			if lc.next < lc.l.end() && w.eventLocked(lc.l.at(lc.next)) == ev {
				lc.next++
			}
		}
		if !c.pos.Less(ev.ID) {
			continue // the cursor came from a node further along
		}
		bufs = c.deliver(bufs, ev, &size)
	}
	head := w.head
	if exhausted {
		if c.pos.Less(head) {
			c.pos = head
		}
		if !c.caughtUp {
			bufs = c.appendCaughtUp(bufs, &size)
		}
	}
	w.mu.RUnlock()
	if c.caughtUp {
		c.resume = nil // what an idle connection keeps is only the cursor
	}

	if wasCaughtUp && len(bufs) > liveFrom {
		// Reading the clock costs more than the rest of a pull: sample.
		if c.lagTick%lagSample == 0 {
			c.observeLag(bufs[liveFrom:])
		}
		c.lagTick++
	}
	// The cursor frame carries pos, but never beyond the head: a since
	// resume in the future has a pos no entry has, which a client must not
	// store (resuming from it would be "id is in the future").
	if c.wantCursor.Swap(false) && exhausted && len(bufs) == start && c.lastReported.Less(c.pos) && !head.Less(c.pos) {
		bufs = append(bufs, controlFrame1("cursor", "last", c.pos))
		c.lastReported = c.pos
	}
	if exhausted && c.lastReported == c.pos {
		c.reported.Store(c.hub.appends.Load())
	}
	return c.finish(bufs, start)
}

type pageAction uint8

const (
	actSwitched pageAction = iota // now in window mode; window.mu still held
	actFull                       // maxBytes reached
	actNextPage                   // page used up, the window does not reach pos yet
	actLost                       // entries the cursor needed were trimmed before it read them
	actEvicted                    // a due event at or before evictedUpTo: it had left the window
)

// consumePageLocked sends from a ready page what is due after pos, and
// switches to the window as soon as the window holds everything from there
// (its complete id is at or past pos, or the page reached an id the window
// holds). Called with window.mu read-locked.
func (c *Cursor) consumePageLocked(w *window, p *page, bufs *[][]byte, size *int, start, maxBytes int) pageAction {
	r := c.resume
	complete := w.complete
	need := c.pos.Next()
	if need.Less(r.skipBelow) {
		need = r.skipBelow
	}
	deleted := p.deleted
	if deleted.Less(w.lostUpTo) {
		deleted = w.lostUpTo // Redis lost data this node had read
	}
	if r.pageAt == 0 && !deleted.Less(need) && !complete.Less(need) {
		// Entries the cursor needs may have been trimmed before the page was
		// read, and the window does not hold them: say so by closing rather
		// than skip them silently; the resume then gets a gap frame.
		return actLost
	}
	// Start after pos, and stop before the first event the window holds
	// (binary searches: the page is in id order).
	from := max(r.pageAt, pageSearch(p.events, c.pos))
	r.pageAt = from
	cut := pageSearch(p.events, complete)
	if cut < from {
		cut = from
	}
	// The cursor's own lists in the page: its user, its groups, broadcast.
	var buf [8][]int32
	lists := buf[:0]
	if l := p.users[c.userID()]; len(l) > 0 {
		lists = append(lists, l)
	}
	if len(p.groups) > 0 {
		for _, g := range c.groupLists() {
			if l := p.groups[g.l.name]; len(l) > 0 {
				lists = append(lists, l)
			}
		}
	}
	if len(p.all) > 0 {
		lists = append(lists, p.all)
	}
	for k, l := range lists {
		i, _ := slices.BinarySearch(l, int32(from))
		lists[k] = l[i:]
	}
	for {
		// The next event addressed to the cursor: the smallest head; an event
		// in several lists is taken from each once.
		j := cut
		for _, l := range lists {
			if len(l) > 0 && int(l[0]) < j {
				j = int(l[0])
			}
		}
		if j > from {
			// Nothing between is addressed to the cursor: examined.
			c.pos, r.pageAt, from = p.events[j-1].ID, j, j
		}
		if j == cut {
			break
		}
		if *size >= maxBytes && len(*bufs) > start {
			return actFull
		}
		for k, l := range lists {
			if len(l) > 0 && int(l[0]) == j {
				lists[k] = l[1:]
			}
		}
		e := p.events[j]
		r.pageAt, from = j+1, j+1
		if e.ID.Less(r.skipBelow) {
			c.pos = e.ID
			continue
		}
		if !r.evictedUpTo.Less(e.ID) && c.wants(e.Type) {
			return actEvicted
		}
		*bufs = c.deliver(*bufs, e, size)
	}
	if cut < len(p.events) {
		// The page is contiguous: nothing in the stream lies between pos
		// and the event at cut but what was consumed, so the window serves
		// from here.
		return c.switchLocked(w)
	}
	if complete.Less(p.last) {
		// The window holds everything after complete, also what was trimmed
		// from the stream since: do not step over it.
		return c.switchLocked(w)
	}
	if c.pos.Less(p.last) {
		c.pos = p.last
	}
	if !c.pos.Less(complete) {
		return c.switchLocked(w)
	}
	if p.last.IsZero() {
		// Redis holds nothing after pos; what the window lacks before
		// complete was trimmed, which the deleted check or the gap frame
		// already accounted for.
		return c.switchLocked(w)
	}
	return actNextPage
}

func (c *Cursor) switchLocked(w *window) pageAction {
	if c.pos.Less(w.complete) {
		c.pos = w.complete
	}
	r := c.resume
	c.mode, r.page, r.pageAt, r.evictedUpTo = modeWindow, nil, 0, ID{}
	c.placeLocked(w)
	return actSwitched
}

// placeLocked points every list at its first event after pos. Called with
// window.mu held; from then on an eviction past next is a missed event.
func (c *Cursor) placeLocked(w *window) {
	for i := range c.lists {
		c.lists[i].next = w.searchLocked(c.lists[i].l, c.pos)
	}
}

// deliver advances pos to ev and sends it when its type passes, preceded by
// caught_up when ev is the first event after the head at connect.
func (c *Cursor) deliver(bufs [][]byte, ev *Event, size *int) [][]byte {
	if !c.caughtUp && c.resume.catchUpAt.Less(ev.ID) {
		bufs = c.appendCaughtUp(bufs, size)
	}
	c.pos = ev.ID
	if c.wants(ev.Type) {
		bufs = append(bufs, ev.Frame)
		*size += len(ev.Frame)
		c.lastReported = ev.ID
	}
	return bufs
}

func (c *Cursor) appendCaughtUp(bufs [][]byte, size *int) [][]byte {
	last := c.resume.caughtUpLast
	f := controlFrame1("caught_up", "last", last)
	c.caughtUp = true
	if c.lastReported.Less(last) {
		c.lastReported = last
	}
	*size += len(f)
	return append(bufs, f)
}

// pageSearch returns the index of the first event with an id greater than
// after (len(events) when none).
func pageSearch(events []*Event, after ID) int {
	lo, hi := 0, len(events)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if after.Less(events[mid].ID) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

func (c *Cursor) observeLag(frames [][]byte) {
	for _, f := range frames {
		// Event frames start with {"id":"<ms>-; control frames are skipped.
		ms, ok := frameMs(f)
		if !ok {
			continue
		}
		c.hub.hooks.Lag(lagSince(ms, time.Now()))
		return
	}
}

// lagSince is how long before now the id time ms lies, 0 for one in the
// future. In unsigned milliseconds: Redis takes ids up to 2^64-1 ms, which a
// time.Time of int64 milliseconds would wrap into the past.
func lagSince(ms uint64, now time.Time) time.Duration {
	nowMs := uint64(now.UnixMilli())
	if ms >= nowMs {
		return 0
	}
	return time.Duration(nowMs-ms) * time.Millisecond
}

// frameMs reads the id time of an event frame without decoding JSON.
func frameMs(f []byte) (uint64, bool) {
	const prefix = `{"id":"`
	h := TextFrameHeaderLen(0)
	if len(f) > 1 {
		switch f[1] & 0x7f {
		case 126:
			h = 4
		case 127:
			h = 10
		}
	}
	if len(f) < h+len(prefix) || string(f[h:h+len(prefix)]) != prefix {
		return 0, false
	}
	var ms uint64
	i := h + len(prefix)
	for ; i < len(f) && f[i] >= '0' && f[i] <= '9'; i++ {
		ms = ms*10 + uint64(f[i]-'0')
	}
	return ms, i < len(f) && f[i] == '-'
}

// finish notes that frames went out, by the Hub's coarse clock: a cursor
// frame may thus come up to one append interval early, never late.
func (c *Cursor) finish(bufs [][]byte, start int) [][]byte {
	if len(bufs) > start {
		c.quietSince.Store(c.hub.clock.Load())
	}
	return bufs
}

// fail closes the connection with 1013; it resumes elsewhere or later.
func (c *Cursor) fail(cause, reason string) {
	c.mode = modeDone
	c.hub.hooks.SlowClosed(cause)
	c.hub.logger.Debug("closing connection", zap.String("user", c.userID()),
		zap.String("cause", cause), zap.Stringer("pos", c.pos))
	c.peer.Close(CloseTryAgainLater, reason)
}

// Closed unregisters the connection. It is idempotent. Once it has returned,
// and no Pull is still running, no Wake reaches the peer (a Pull racing it
// could still queue one page read whose arrival wakes the peer).
func (c *Cursor) Closed() {
	if c.closed.Swap(true) {
		return
	}
	c.unregister()
}

func (c *Cursor) unregister() {
	h := c.hub
	w := h.w
	w.mu.Lock()
	c.unregisterLocked(w)
	w.mu.Unlock()
	h.bf.forget(c)
}

// controlFrame1 builds {"control":kind,key:"id"} as a text frame.
func controlFrame1(kind, key string, id ID) []byte {
	var p [128]byte
	b := append(p[:0], `{"control":"`...)
	b = append(b, kind...)
	b = append(b, `","`...)
	b = append(b, key...)
	b = append(b, `":"`...)
	b = id.AppendTo(b)
	b = append(b, `"}`...)
	return AppendTextFrame(make([]byte, 0, 2+len(b)), b)
}

// controlFrame builds {"control":kind,k1:"id1",k2:"id2"} as a text frame.
func controlFrame(kind, k1 string, id1 ID, k2 string, id2 ID) []byte {
	var p [192]byte
	b := append(p[:0], `{"control":"`...)
	b = append(b, kind...)
	b = append(b, `","`...)
	b = append(b, k1...)
	b = append(b, `":"`...)
	b = id1.AppendTo(b)
	b = append(b, `","`...)
	b = append(b, k2...)
	b = append(b, `":"`...)
	b = id2.AppendTo(b)
	b = append(b, `"}`...)
	return AppendTextFrame(make([]byte, 0, 2+len(b)), b)
}
