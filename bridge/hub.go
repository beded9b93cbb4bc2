package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// ErrClosed is returned by a Hub after Close.
var ErrClosed = errors.New("bridge: hub closed")

// storeTimeout bounds the Redis calls a handshake makes (XINFO STREAM).
const storeTimeout = 5 * time.Second

// closeTimeout bounds how long Close waits for the Hub's goroutines.
const closeTimeout = 10 * time.Second

// Hub is one node's delivery core: the replay window and its recipient index,
// the connections' cursors, the shared backfill reader and the cursor ticker.
// Every method is safe for concurrent use.
//
// Lock order (docs/design.md): a cursor's own state belongs to its drainer
// (Pull) and takes no lock. window.mu is taken alone by Append, Pull, Accept,
// Closed and the ticker, never while another lock is held and never around
// another lock. backfill.mu is a leaf. Peer.Wake, which never blocks, is
// called under window.mu (read) and backfill.mu. No lock is held across a
// Store call, logging or network I/O.
type Hub struct {
	cfg    Config
	store  Store
	hooks  Hooks
	logger *zap.Logger

	w    *window
	bf   *backfill
	info infoFlight

	// appends counts events ever appended; the ticker compares it with what
	// a cursor last reported, without the window lock.
	appends atomic.Uint64
	// clock is a coarse wall clock (unix nanoseconds) set once per Append and
	// per tick, so the per-connection path does not read the clock for each
	// recipient.
	clock  atomic.Int64
	closed atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewHub builds a Hub over store and starts its backfill workers and cursor
// ticker. Call Warm before serving, and Close to stop.
func NewHub(cfg Config, store Store) (*Hub, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("bridge: NewHub needs a Store")
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		cfg:    cfg,
		store:  store,
		hooks:  cfg.Hooks,
		logger: cfg.Logger,
		w:      newWindow(cfg.WindowBytes),
		ctx:    ctx,
		cancel: cancel,
	}
	h.bf = newBackfill(store, cfg.BackfillPage, cfg.BackfillBytes, cfg.Hooks, cfg.Logger, h.Head, h.noteInfo)
	h.clock.Store(time.Now().UnixNano())
	for range cfg.BackfillWorkers {
		h.wg.Go(func() { h.bf.run(ctx) })
	}
	h.wg.Go(h.tick)
	return h, nil
}

// Close stops the backfill workers and the ticker and waits for them. Open
// cursors stay valid for Closed; their Pulls return nothing more.
func (h *Hub) Close() error {
	if h.closed.Swap(true) {
		return nil
	}
	h.cancel()
	h.bf.close()
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(closeTimeout):
		return fmt.Errorf("bridge: goroutines still running after %v (a Store call ignores its context)", closeTimeout)
	}
}

// Head is the newest id this node's window is up to date with: the newest
// event appended, or after Warm the stream's last generated id.
func (h *Hub) Head() ID {
	h.w.mu.RLock()
	defer h.w.mu.RUnlock()
	return h.w.head
}

// PendingReads is how many Redis page reads for resumes older than the
// window were requested and have not finished. It is read-only
// introspection for tests and debugging (bridge/bridgetest waits on it
// before trimming the stream, and to tell a cursor that waits for a page
// from one that is drained); a drainer never needs it, since a cursor waiting
// for a page has its peer woken when the page arrives.
func (h *Hub) PendingReads() int {
	h.bf.mu.Lock()
	defer h.bf.mu.Unlock()
	return len(h.bf.pending)
}

// Warm fills the window from the stream's newest entries, up to WindowBytes,
// before the node serves. It returns newest, the id to create the ingest
// consumer group at: the newest decodable entry warmed (entries after it are
// undecodable and will be dead-lettered by ingest), the last generated id of
// a stream with no entries, or 0-0 when no entry decodes at all. The head
// becomes the stream's last generated id (0-0 for a stream never written).
// Call it once, before the node accepts connections or appends.
func (h *Hub) Warm(ctx context.Context) (newest ID, err error) {
	info, err := h.store.Info(ctx)
	if err != nil {
		return ID{}, fmt.Errorf("bridge: warm: %w", err)
	}
	var (
		warmed   []*Event // newest first
		bytes    int64
		complete ID      // newest entry not warmed
		origin   idRange // ids that never were in the stream: after what was deleted, before the first entry
		full     bool
	)
	before := info.LastGeneratedID
	for info.Length > 0 && !full {
		events, last, err := h.store.RevRange(ctx, before, h.cfg.BackfillPage)
		if err != nil {
			return ID{}, fmt.Errorf("bridge: warm: %w", err)
		}
		for _, ev := range events {
			if len(warmed) > 0 && !ev.ID.Less(warmed[len(warmed)-1].ID) {
				continue // out of order: a Store bug; keep the log sorted
			}
			cost := int64(ev.Size()) + 2*slotBytes
			if bytes+cost > h.cfg.WindowBytes && len(warmed) > 0 {
				complete, full = ev.ID, true
				break
			}
			bytes += cost
			warmed = append(warmed, ev)
		}
		// Page on until a read returns nothing: the Store does not say how
		// many undecodable entries a page skipped.
		if last.IsZero() {
			break
		}
		before = last.Prev()
	}
	if !full {
		// Everything the stream holds is warmed: what is older was deleted,
		// or never existed in this stream. An id between complete and the
		// first entry is then from a stream Redis lost before this node
		// started (it too reports nothing deleted): origin marks that, since
		// a later trim of the new stream would hide it from XINFO. An empty
		// stream's first entry is the first event appended (an undecodable
		// entry before it is taken for a lost one: a gap that skips nothing).
		complete = deletedBound(info)
		switch {
		case info.Length == 0:
			origin = idRange{after: complete, open: true}
		case complete.Less(info.FirstID.Prev()):
			origin = idRange{after: complete, before: info.FirstID}
		}
	}
	switch {
	case len(warmed) > 0:
		newest = warmed[0].ID
	case info.Length == 0:
		newest = info.LastGeneratedID
	}

	w := h.w
	w.mu.Lock()
	if w.lenLocked() > 0 || h.appends.Load() > 0 {
		w.mu.Unlock()
		return ID{}, errors.New("bridge: Warm after Append")
	}
	w.complete, w.neverHad = complete, origin
	for i := len(warmed) - 1; i >= 0; i-- {
		w.appendLocked(warmed[i])
	}
	w.head = info.LastGeneratedID
	events, wb := w.lenLocked(), w.bytes
	w.mu.Unlock()
	h.hooks.WindowSize(events, wb)
	h.logger.Info("replay window warmed",
		zap.Int("events", events), zap.Int64("bytes", wb),
		zap.Stringer("head", info.LastGeneratedID), zap.Stringer("complete_after", complete),
		zap.Stringer("group_start", newest))
	return newest, nil
}

// deletedBound is the newest id that may have been deleted from the stream:
// Redis 7 says so; without it (older Redis, miniredis) anything before the
// first entry may have existed, and for an empty stream anything up to the
// last generated id.
func deletedBound(info StreamInfo) ID {
	switch {
	case info.MaxDeletedKnown:
		return info.MaxDeletedID
	case info.Length > 0:
		return info.FirstID.Prev()
	default:
		return info.LastGeneratedID
	}
}

// GroupRecreated tells the Hub that ingest lost its place: the consumer group
// was deleted, or Redis lost its data (a restart without persistence, a
// failover to a replica without the group). It returns the id at which to
// create the new group, the head, so no entry after what the window holds is
// skipped.
//
// The window keeps vouching for what it holds: it was read from the stream
// in order, so a resume inside it is served from it whatever Redis lost (the
// contract's gap is only for events in neither place). What changes is
// Redis's own account: a stream that lost its data starts over and reports
// nothing deleted, so the Hub asks XINFO whether its head is still there and,
// when it is not, remembers that everything up to the head may be gone from
// Redis (lostUpTo), for resumes older than the window.
func (h *Hub) GroupRecreated() ID {
	head := h.Head()
	ctx, cancel := context.WithTimeout(h.ctx, storeTimeout)
	info, err := h.store.Info(ctx)
	cancel()
	lost := h.noteInfo(info, head)
	if err != nil {
		// Whether Redis kept the head is unknown: assume not (a resume older
		// than the window may then get a gap that skips nothing).
		lost = h.noteLoss(head)
	}
	h.logger.Warn("ingest group recreated; resumes inside the window are served from it",
		zap.Stringer("head", head), zap.Bool("redis_lost_data", !lost.IsZero()), zap.Error(err))
	return head
}

// noteInfo checks an XINFO answer against headBefore, this node's head taken
// before the call: when the stream lost what the node had read, everything up
// to headBefore may be gone from Redis without XINFO saying so. It returns
// the newest such id this node knows of (zero when none).
func (h *Hub) noteInfo(info StreamInfo, headBefore ID) ID {
	if redisLost(info, headBefore) {
		return h.noteLoss(headBefore)
	}
	h.w.mu.RLock()
	defer h.w.mu.RUnlock()
	return h.w.lostUpTo
}

// noteLoss records that Redis lost what this node read up to head. Only
// events matter: the bound is the newest event at or before head (the
// undecodable entries after it were never deliverable).
func (h *Hub) noteLoss(head ID) ID {
	h.w.mu.Lock()
	upTo := h.w.newestEventLocked(head)
	first := h.w.lostUpTo.Less(upTo)
	if first {
		h.w.lostUpTo = upTo
	}
	lost := h.w.lostUpTo
	h.w.mu.Unlock()
	if first {
		h.hooks.RedisLostData()
		h.logger.Warn("redis lost entries this node had read: resumes older than the replay window up to this id get a gap",
			zap.Stringer("lost_up_to", upTo))
	}
	return lost
}

// gapBounds is what the window knew at a handshake, for decideGap.
type gapBounds struct {
	complete, lostUpTo ID
	origin             idRange
	windowOldest       ID
	held               bool
}

// idRange is the ids strictly between after and before; the zero value is
// empty, and so is an open one, whose end is not known yet.
type idRange struct {
	after, before ID
	open          bool
}

func (r idRange) has(id ID) bool { return !r.open && r.after.Less(id) && id.Less(r.before) }

// foreignID reports whether id, which a client was sent, is from a stream
// this node did not read: one where the stream it warmed from never had an
// entry (neverHad), or one Redis lost since that is beyond what this node
// read (lostUpTo) and that the stream neither holds nor records deleting.
func foreignID(info StreamInfo, id ID, neverHad idRange, lostUpTo ID) bool {
	if id.IsZero() {
		return false
	}
	return neverHad.has(id) || lostUpTo.Less(id) && redisLost(info, id)
}

// redisLost reports whether the stream no longer holds id, an entry it had,
// without recording that it deleted it: Redis lost its data since.
func redisLost(info StreamInfo, id ID) bool {
	if id.IsZero() {
		return false
	}
	if info.LastGeneratedID.Less(id) {
		return true // the stream never generated it
	}
	return info.Length > 0 && id.Less(info.FirstID) && deletedBound(info).Less(id)
}

// Append adds an event from ingest to the window and wakes the connections it
// is for. It returns false, doing nothing, when the window's head is already
// at or beyond ev.ID (at-least-once redelivery); the caller acks either way.
// Events must come in stream order, as one consumer reads them: an event
// older than the head is taken for a redelivery.
func (h *Hub) Append(ev *Event) bool {
	w := h.w
	w.mu.Lock()
	if !w.head.Less(ev.ID) {
		w.mu.Unlock()
		return false
	}
	if w.neverHad.open {
		w.neverHad.before, w.neverHad.open = ev.ID, false
	}
	evicted := w.appendLocked(ev)
	events, bytes := w.lenLocked(), w.bytes
	w.mu.Unlock()
	h.appends.Add(1)
	h.clock.Store(time.Now().UnixNano())

	h.hooks.Appended()
	if evicted > 0 {
		h.hooks.Evicted(evicted)
	}
	h.hooks.WindowSize(events, bytes)
	w.mu.RLock()
	ForEachRecipient(ev.To, w.wakeLocked)
	w.mu.RUnlock()
	return true
}

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
	w.mu.Unlock()

	var info *StreamInfo
	getInfo := func(fresh bool) (*StreamInfo, error) {
		if info == nil || fresh {
			i, err := h.info.get(h.ctx, h.store, fresh)
			if err != nil {
				return nil, fmt.Errorf("bridge: reading stream info: %w", err)
			}
			info = &i
			h.noteInfo(i, head)
		}
		return info, nil
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
		if lost := h.noteInfo(*i, head); inWindow && (foreignID(*i, q.ID, origin, lost) ||
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
		c.decideGap(q, *i, gapBounds{complete: complete, origin: origin, lostUpTo: h.noteInfo(*i, head),
			windowOldest: oldest, held: held})
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
		gone = foreignID(info, q.ID, b.origin, b.lostUpTo) || c.pos.Less(b.complete) && redisLost(info, q.ID)
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

// tick is the cursor ticker: every half cursor_interval it wakes connections
// that have been silent that long while the window moved, so their Pull sends
// a cursor frame. One goroutine for all connections; no per-connection timer.
func (h *Hub) tick() {
	period := h.cfg.CursorInterval / 2
	if period < time.Millisecond {
		period = time.Millisecond
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case now := <-t.C:
			h.clock.Store(now.UnixNano())
			appends := h.appends.Load()
			quietBefore := now.Add(-h.cfg.CursorInterval).UnixNano()
			h.w.mu.RLock()
			h.w.forEachCursorLocked(func(c *Cursor) {
				if c.reported.Load() != appends && c.quietSince.Load() <= quietBefore {
					c.wantCursor.Store(true)
					c.peer.Wake()
				}
			})
			h.w.mu.RUnlock()
		}
	}
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
