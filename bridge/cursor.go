package bridge

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// CloseTryAgainLater is the WebSocket close code for a connection that fell
// out of the replay window (contract §2): it resumes to catch up.
const CloseTryAgainLater = 1013

// closeReason is one reason the core closes a connection: the close code,
// the line sent in the close frame, and the fixed word Hooks.SlowClosed
// counts. The values are shared and read-only.
type closeReason struct {
	code  int
	text  string
	cause string
}

var (
	closeEvicted      = closeReason{CloseTryAgainLater, "fell behind: events it still needed left the replay window; resume to catch up", "evicted"}
	closeReplayFailed = closeReason{CloseTryAgainLater, "replay from Redis failed; resume later", "replay_failed"}
	closeTrimmed      = closeReason{CloseTryAgainLater, "history was trimmed during replay; resume to see the gap", "replay_trimmed"}
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

	// For introspection only (introspect.go): pos as of the last Pull, and
	// when the connection was registered.
	seenMs, seenSeq atomic.Uint64
	since           int64
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
//
// The steps: the gap frame; the replay from Redis while the window does not
// reach the cursor (pullReplay); the check that nothing it still needed left
// the window (checkListsLocked), which may send it back to a replay; the
// window itself (pullWindowLocked); then the cursor frame.
func (c *Cursor) Pull(bufs [][]byte, maxBytes int) [][]byte {
	if c.mode == modeDone || c.closed.Load() || c.hub.closed.Load() {
		return bufs
	}
	b := &batch{bufs: bufs, start: len(bufs), max: maxBytes}
	if r := c.resume; r != nil && r.gapFrame != nil {
		b.add(r.gapFrame)
		r.gapFrame = nil
	}
	w := c.hub.w
	for {
		locked, goOn := c.pullReplay(b)
		if !goOn {
			return c.finish(b)
		}
		if !locked {
			w.mu.RLock()
		}
		switch c.checkListsLocked(w) {
		case listsEvicted:
			w.mu.RUnlock()
			c.fail(closeEvicted)
			return c.finish(b)
		case listsReplay:
			w.mu.RUnlock()
			continue
		}
		break
	}
	liveFrom, wasCaughtUp := len(b.bufs), c.caughtUp
	exhausted, head := c.pullWindowLocked(w, b)
	w.mu.RUnlock()
	if c.caughtUp {
		c.resume = nil // what an idle connection keeps is only the cursor
	}
	if wasCaughtUp && len(b.bufs) > liveFrom {
		// Reading the clock costs more than the rest of a pull: sample.
		if c.lagTick%lagSample == 0 {
			c.observeLag(b.bufs[liveFrom:])
		}
		c.lagTick++
	}
	// The cursor frame carries pos, but never beyond the head: a since
	// resume in the future has a pos no entry has, which a client must not
	// store (resuming from it would be "id is in the future").
	if c.wantCursor.Swap(false) && exhausted && b.empty() && c.lastReported.Less(c.pos) && !head.Less(c.pos) {
		b.add(controlFrame1("cursor", "last", c.pos))
		c.lastReported = c.pos
	}
	if exhausted && c.lastReported == c.pos {
		c.reported.Store(c.hub.appends.Load())
	}
	return c.finish(b)
}

// batch is what one Pull adds to the drainer's buffers: the frames after
// start, their bytes, and about how many it may add.
type batch struct {
	bufs  [][]byte
	start int
	size  int
	max   int
}

func (b *batch) add(f []byte) {
	b.bufs = append(b.bufs, f)
	b.size += len(f)
}

// full: the budget is used, and at least one frame was added.
func (b *batch) full() bool  { return b.size >= b.max && len(b.bufs) > b.start }
func (b *batch) empty() bool { return len(b.bufs) == b.start }

// pullReplay sends from Redis pages while the cursor replays (modeBackfill).
// It reports whether the Pull goes on to the window (goOn), and then whether
// window.mu is already read-locked (the switch to the window happened under
// it, so no append falls between).
func (c *Cursor) pullReplay(b *batch) (locked, goOn bool) {
	w := c.hub.w
	for c.mode == modeBackfill {
		if b.full() {
			return false, false
		}
		r := c.resuming()
		p := r.page
		if p == nil {
			p = c.hub.bf.request(c, c.pos)
			r.page, r.pageAt = p, 0
		}
		if !p.ready.Load() {
			return false, false
		}
		if p.err != nil {
			c.fail(closeReplayFailed)
			return false, false
		}
		if !p.last.IsZero() && !p.covers(c.pos) {
			r.page = nil // joined a read that ended before pos
			continue
		}
		w.mu.RLock()
		switch c.consumePageLocked(w, p, b) {
		case actSwitched:
			return true, true
		case actFull:
			w.mu.RUnlock()
			return false, false
		case actNextPage:
			w.mu.RUnlock()
			r.page = nil
		case actLost:
			w.mu.RUnlock()
			c.fail(closeTrimmed)
			return false, false
		case actEvicted:
			w.mu.RUnlock()
			c.fail(closeEvicted)
			return false, false
		}
	}
	return false, true
}

type listsState uint8

const (
	listsOK      listsState = iota
	listsEvicted            // an event it still needed left the window: 1013
	listsReplay             // maybe: read what left back from Redis (modeBackfill)
)

// checkListsLocked looks for lists whose events left the window before the
// cursor examined them. What left and was not newer than pos does not
// matter; otherwise, without a types filter the connection missed an event,
// and with one it is unknown whether what left was of a type it wants, so it
// replays from Redis and closes only if it was.
func (c *Cursor) checkListsLocked(w *window) listsState {
	for i := range c.lists {
		lc := &c.lists[i]
		if lc.next >= lc.l.base {
			continue
		}
		if !c.pos.Less(lc.l.evicted) {
			lc.next = lc.l.base
			continue
		}
		if c.types == nil {
			return listsEvicted
		}
		c.resuming().evictedUpTo = w.complete
		c.resume.page = nil
		c.mode = modeBackfill
		return listsReplay
	}
	return listsOK
}

// pullWindowLocked merges the cursor's lists in the window: the smallest
// next id each time; an event in several lists (user and group, or named
// twice) is the same *Event, advanced once. It reports whether the lists
// were exhausted, and the head it read under the lock, after sending
// caught_up once they were.
func (c *Cursor) pullWindowLocked(w *window, b *batch) (exhausted bool, head ID) {
	for {
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
		if b.full() {
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
		c.deliver(b, ev)
	}
	head = w.head
	if exhausted {
		if c.pos.Less(head) {
			c.pos = head
		}
		if !c.caughtUp {
			c.appendCaughtUp(b)
		}
	}
	return exhausted, head
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
func (c *Cursor) deliver(b *batch, ev *Event) {
	if !c.caughtUp && c.resume.catchUpAt.Less(ev.ID) {
		c.appendCaughtUp(b)
	}
	c.pos = ev.ID
	if c.mode == modeDone {
		return // revoked earlier in this pull: nothing after the entry is sent
	}
	if ev.Control != nil {
		c.control(ev)
		return
	}
	if c.wants(ev.Type) {
		b.add(ev.Frame)
		c.lastReported = ev.ID
	}
}

func (c *Cursor) appendCaughtUp(b *batch) {
	last := c.resume.caughtUpLast
	b.add(controlFrame1("caught_up", "last", last))
	c.caughtUp = true
	if c.lastReported.Less(last) {
		c.lastReported = last
	}
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

// finish notes that frames went out, by the Hub's coarse clock: a cursor
// frame may thus come up to one append interval early, never late.
func (c *Cursor) finish(b *batch) [][]byte {
	c.seenMs.Store(c.pos.Ms)
	c.seenSeq.Store(c.pos.Seq)
	if !b.empty() {
		c.quietSince.Store(c.hub.clock.Load())
	}
	return b.bufs
}

// fail closes the connection for reason; it resumes elsewhere or later.
func (c *Cursor) fail(reason closeReason) {
	c.mode = modeDone
	c.hub.hooks.SlowClosed(reason.cause)
	c.hub.logger.Debug("closing connection", zap.String("user", c.userID()),
		zap.String("cause", reason.cause), zap.Stringer("pos", c.pos))
	c.peer.Close(reason.code, reason.text)
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
