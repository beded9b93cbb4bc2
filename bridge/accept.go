package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// A new connection: its place in the stream, the gap decision, and the
// shared XINFO of a reconnect storm.

// Identity is who a connection is. The transport checks it before Accept
// (ValidateName for the user and each group, and max_groups), so the rule
// lives in one room; the core takes it as given.
type Identity struct {
	User   string
	Groups []string
}

// Accept starts a connection of id resuming by q (ParseResumeQuery): it
// places the connection's cursor, registers it for wakes and wakes the peer
// once so the first Pull sends what is due (gap, replay, caught_up). An error
// whose errors.Is(err, ErrBadQuery) is the client's fault (HTTP 400 with
// err.Error() as its line: an id in the future); any other means the node
// cannot serve now (HTTP 503: closed, or Redis could not be asked). Only a
// resume id beyond this node's head costs an XINFO, as does a resume older
// than the window.
func (h *Hub) Accept(peer Peer, id Identity, q ResumeQuery) (*Cursor, error) {
	if h.closed.Load() {
		return nil, ErrClosed
	}
	user := id.User
	gs := slices.Clone(id.Groups)
	slices.Sort(gs)
	gs = slices.Compact(gs)

	c := &Cursor{hub: h, peer: peer}
	if !q.Types.All() {
		types := q.Types
		c.types = &types
	}
	c.quietSince.Store(time.Now().UnixNano())
	w := h.w
	w.mu.Lock()
	// The lists keep their own copies of the names (the given ones may be
	// slices of the handshake's request); the cursor and the wake sets use
	// those, so the connection holds no other copy.
	c.lists = make([]listCursor, 0, len(gs)+2)
	c.lists = append(c.lists, listCursor{l: w.listLocked(KindUser, user, true)})
	for _, g := range gs {
		c.lists = append(c.lists, listCursor{l: w.listLocked(KindGroup, g, true)})
	}
	c.lists = append(c.lists, listCursor{l: w.all})
	// Registered for wakes before the lock is released: an event appended
	// after this placement wakes it, one appended before is placed below.
	c.registerLocked(w)
	head, complete, origin := w.head, w.complete, w.neverHad
	oldest, held := w.oldestLocked()
	switch q.Mode {
	case ResumeLive:
		c.pos = head
	case ResumeAfterID:
		c.pos = q.ID
	case ResumeSince:
		c.pos = ID{Ms: q.SinceMs}.Prev()
	}
	c.resume = &resumeState{catchUpAt: head, caughtUpLast: head}
	if q.Mode == ResumeAfterID && head.Less(q.ID) {
		c.resume.caughtUpLast = q.ID
	}
	// A resume id below everything the window holds (beyond complete, where
	// it says no event exists) is one it cannot vouch for: it may be an
	// undecodable entry, or from a stream Redis has lost since. The stream
	// tells (decideGap).
	inWindow := !c.pos.Less(complete) &&
		(q.Mode != ResumeAfterID || q.ID.IsZero() || (held && !q.ID.Less(oldest)) || (!held && !q.ID.Less(head)))
	if inWindow {
		c.placeLocked(w)
	} else {
		c.mode = modeBackfill
	}
	// An id inside the window's span that is no event it holds is a head, an
	// undecodable or deleted entry, or one from a stream this node never
	// read: a replica promoted without the newest entries continues the
	// stream after a hole where they were. The stream tells (foreignHole).
	hole := inWindow && q.Mode == ResumeAfterID && !q.ID.IsZero() && q.ID != head &&
		!head.Less(q.ID) && !w.holdsEventLocked(q.ID)
	w.mu.Unlock()

	// One XINFO at most (two when a shared answer predates the id), and what
	// it says about Redis losing data, noted once per answer.
	var (
		info *StreamInfo
		lost ID // lostUpTo after the newest answer
	)
	getInfo := func(fresh bool) (*StreamInfo, error) {
		if info == nil || fresh {
			i, err := h.info.get(h.ctx, h.store, fresh)
			if err != nil {
				return nil, fmt.Errorf("bridge: reading stream info: %w", err)
			}
			info = &i
			lost = h.noteInfo(i, head)
		}
		return info, nil
	}
	foreign := false
	if hole {
		var err error
		if foreign, err = h.foreignHole(q.ID, getInfo); err != nil {
			c.unregister()
			return nil, err
		}
		if foreign {
			// What followed the id in the stream it came from may be gone
			// (decideGap); no Pull has run yet.
			inWindow, c.mode = false, modeBackfill
		}
	}
	if q.Mode == ResumeAfterID && head.Less(q.ID) {
		i, err := getInfo(false)
		if err == nil && i.LastGeneratedID.Less(q.ID) {
			// A shared answer may predate the id; ask once more before
			// refusing.
			i, err = getInfo(true)
		}
		if err != nil {
			c.unregister()
			return nil, err
		}
		if i.LastGeneratedID.Less(q.ID) {
			c.unregister()
			return nil, &QueryError{Param: q.idParam, Reason: "id is in the future"}
		}
		if inWindow && (foreignID(*i, q.ID, origin, lost) ||
			!i.MaxDeletedKnown && lost.Less(q.ID) && i.Length > 0 && q.ID.Less(i.FirstID)) {
			// Ahead of this node, but from a stream Redis lost before this
			// node read it (or, where Redis does not report deletions, maybe
			// trimmed): what followed the id may be gone (decideGap). No Pull
			// has run yet, so the cursor is still the handshake's.
			inWindow, c.mode = false, modeBackfill
		}
	}
	switch {
	case q.Mode == ResumeLive:
		h.hooks.Resumed(ResumeFromLive)
	case inWindow:
		h.hooks.Resumed(ResumeFromWindow)
	default:
		i, err := getInfo(false)
		if err != nil {
			c.unregister()
			return nil, err
		}
		c.decideGap(q, *i, gapBounds{complete: complete, origin: origin, lostUpTo: lost,
			windowOldest: oldest, held: held, foreign: foreign})
		h.hooks.Resumed(ResumeFromStore)
	}
	peer.Wake()
	return c, nil
}

// decideGap applies contract §2/§4 for a resume the window alone cannot
// settle: older than complete (everything after it is held), or an id below
// everything held. Entries after the requested id are gone when some may have
// been deleted from the stream after it, or lost with Redis's data, and the
// window does not hold them. The cursor then skips
// anything older than the gap's oldest, so what it delivers agrees with the
// frame even when a cached page still holds trimmed entries.
func (c *Cursor) decideGap(q ResumeQuery, info StreamInfo, b gapBounds) {
	deleted := deletedBound(info)
	if deleted.Less(b.lostUpTo) {
		deleted = b.lostUpTo
	}
	if info.LastGeneratedID.Less(b.complete) && deleted.Less(b.complete) {
		deleted = b.complete // Redis lost data the window had vouched for
	}
	// At or after complete the window holds everything this node read after
	// pos: only a stream that lost the data before this node read it can
	// leave anything out (foreignID). A Redis that does not report deletions
	// cannot tell that apart from a trim, so then a gap is assumed.
	gone := c.pos.Less(deleted) && (c.pos.Less(b.complete) || !info.MaxDeletedKnown && b.lostUpTo.Less(c.pos))
	if !gone && q.Mode == ResumeAfterID {
		gone = b.foreign || foreignID(info, q.ID, b.origin, b.lostUpTo) || c.pos.Less(b.complete) && redisLost(info, q.ID)
	}
	if !gone {
		return
	}
	windowOldest, held := b.windowOldest, b.held
	var oldest ID
	have := false
	if info.Length > 0 {
		oldest, have = info.FirstID, true
	}
	if held && c.pos.Less(windowOldest) && (!have || windowOldest.Less(oldest)) {
		oldest, have = windowOldest, true
	}
	skip := oldest
	if !have {
		// Trimmed to empty: the contract names the last generated id, which
		// is itself gone; nothing at or before it is delivered, nor what
		// Redis lost.
		oldest = info.LastGeneratedID
		skip = oldest.Next()
		if skip.Less(b.lostUpTo) {
			skip = b.lostUpTo.Next()
		}
	}
	requested := q.ID
	if q.Mode == ResumeSince {
		requested = ID{Ms: q.SinceMs}
	}
	r := c.resume
	r.gapFrame = controlFrame("gap", "requested", requested, "oldest", oldest)
	r.skipBelow = skip
	c.hub.hooks.Gap()
}

// infoFlight shares one XINFO STREAM among the handshakes that need it at the
// same moment, so a reconnect storm from before the window costs a few XINFO
// calls, not one per client. A handshake may thus see an answer a moment
// older than itself: a trim in that moment is caught when its replay pages
// are read (the page's own XINFO), and the connection is closed with 1013 to
// resume and see the gap.
type infoFlight struct {
	mu   sync.Mutex
	call *infoCall // guarded by mu; the call in flight, if any
}

type infoCall struct {
	done chan struct{}
	info StreamInfo
	err  error
}

// get returns the in-flight call's answer, or makes a call; fresh always
// makes a new call.
func (f *infoFlight) get(ctx context.Context, store Store, fresh bool) (StreamInfo, error) {
	f.mu.Lock()
	c := f.call
	if c == nil || fresh {
		c = &infoCall{done: make(chan struct{})}
		if !fresh {
			f.call = c
		}
		f.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, storeTimeout)
		c.info, c.err = store.Info(cctx)
		cancel()
		f.mu.Lock()
		if f.call == c {
			f.call = nil
		}
		f.mu.Unlock()
		close(c.done)
		return c.info, c.err
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.info, c.err
	case <-time.After(storeTimeout):
		return StreamInfo{}, errors.New("timed out waiting for XINFO STREAM")
	}
}
