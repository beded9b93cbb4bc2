package bridge

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// page is one XRANGE read for resumes older than the window: the decodable
// events with ids in [from, last], oldest first. Its result fields are written
// once by a backfill worker before ready is set and are read-only after, so a
// cursor reads them without a lock once it has seen ready.
type page struct {
	from ID

	ready  atomic.Bool
	events []*Event
	last   ID // last entry read, decodable or not; zero when none
	// deleted is the newest id that may have been deleted from the stream,
	// read right after the page: entries at or after a cursor's next id that
	// were deleted before the read are missing from the page.
	deleted ID
	err     error
	bytes   int64
	// The events by recipient, built once when the page is read: ordered
	// positions in events per user, per group and for broadcast (an event
	// naming a list twice has one slot). A cursor merges only its own lists,
	// so a page with nothing for it costs a few look-ups, not a scan.
	users  map[string][]int32
	groups map[string][]int32
	all    []int32

	// Guarded by backfill.mu.
	waiters []*Cursor
	cached  bool
	used    uint64 // LRU clock
}

// Memory accounting of a page's index: one slot per recipient list of an
// event, and a fixed cost per list (map entry, slice header, name).
const (
	pageSlotBytes = 4
	pageListBytes = 96
)

// index computes bytes and the per-recipient lists; called by the worker
// before ready is set.
func (p *page) index() {
	for i, ev := range p.events {
		p.bytes += int64(ev.Size())
		pos := int32(i)
		ForEachRecipient(ev.To, func(kind RecipientKind, name string) {
			var l []int32
			switch kind {
			case KindBroadcast:
				l = p.all
			case KindUser:
				if p.users == nil {
					p.users = make(map[string][]int32)
				}
				l = p.users[name]
			default:
				if p.groups == nil {
					p.groups = make(map[string][]int32)
				}
				l = p.groups[name]
			}
			if len(l) > 0 && l[len(l)-1] == pos {
				return // named twice in to: one slot
			}
			if len(l) == 0 {
				p.bytes += pageListBytes + int64(len(name))
			}
			p.bytes += pageSlotBytes
			l = append(l, pos)
			switch kind {
			case KindBroadcast:
				p.all = l
			case KindUser:
				p.users[name] = l
			default:
				p.groups[name] = l
			}
		})
	}
}

// covers reports whether the page tells what the stream held right after
// pos: it starts at or before pos.Next() and reaches beyond pos.
func (p *page) covers(pos ID) bool {
	return !pos.Next().Less(p.from) && pos.Less(p.last)
}

// backfill reads pages for resumes older than the window on a fixed set of
// workers, and shares them: a cursor that needs the entries after pos joins a
// cached or pending page covering pos instead of reading again, so a
// reconnect storm from similar points costs a handful of reads. Cached pages
// are bounded by limit bytes (least recently used dropped first); a dropped
// page stays alive while a cursor still reads it.
//
// Lock order: backfill.mu is a leaf except that Peer.Wake (non-blocking) is
// called under it.
type backfill struct {
	store Store
	// lost checks a page's XINFO against the head taken before its read and
	// returns the newest id Redis may have lost (the Hub's lostUpTo).
	lost   func(info StreamInfo, headBefore ID) ID
	head   func() ID
	count  int
	limit  int64
	hooks  Hooks
	logger *zap.Logger

	mu      sync.Mutex
	pages   []*page // cached, ready pages (unordered; few)
	pending []*page // requested, not yet read
	queue   []*page // pending pages no worker has taken yet
	bytes   int64
	clock   uint64
	signal  chan struct{}
}

func newBackfill(store Store, count int, limit int64, hooks Hooks, logger *zap.Logger,
	head func() ID, lost func(StreamInfo, ID) ID) *backfill {
	return &backfill{store: store, count: count, limit: limit, hooks: hooks, logger: logger,
		head: head, lost: lost, signal: make(chan struct{}, 1)}
}

// request returns a page that covers the entries after pos, ready or pending;
// when pending, c is woken once it is ready. Never blocks on I/O.
func (b *backfill) request(c *Cursor, pos ID) *page {
	from := pos.Next()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clock++
	for _, p := range b.pages {
		if p.covers(pos) {
			p.used = b.clock
			return p
		}
	}
	// Join the pending read that starts closest below from; if it ends before
	// from, the cursor asks again when it arrives.
	var best *page
	for _, p := range b.pending {
		if !from.Less(p.from) && (best == nil || best.from.Less(p.from)) {
			best = p
		}
	}
	if best == nil {
		best = &page{from: from}
		b.pending = append(b.pending, best)
		b.queue = append(b.queue, best)
		select {
		case b.signal <- struct{}{}:
		default:
		}
	}
	best.waiters = append(best.waiters, c)
	return best
}

// forget removes c from every pending page's waiters (the connection is
// gone). It does not read c's drainer-owned fields, so it may run while a
// Pull is in progress.
func (b *backfill) forget(c *Cursor) {
	b.mu.Lock()
	for _, p := range b.pending {
		p.waiters = slices.DeleteFunc(p.waiters, func(w *Cursor) bool { return w == c })
	}
	b.mu.Unlock()
}

// run is one worker; it returns when ctx is done.
func (b *backfill) run(ctx context.Context) {
	for {
		b.mu.Lock()
		var p *page
		if len(b.queue) > 0 {
			p = b.queue[0]
			b.queue = b.queue[1:]
		}
		more := len(b.queue) > 0
		b.mu.Unlock()
		if p == nil {
			select {
			case <-ctx.Done():
				return
			case <-b.signal:
			}
			continue
		}
		if more {
			select { // let another worker take the rest
			case b.signal <- struct{}{}:
			default:
			}
		}
		b.read(ctx, p)
	}
}

func (b *backfill) read(ctx context.Context, p *page) {
	headBefore := b.head()
	events, last, err := b.store.Range(ctx, p.from, b.count)
	if err == nil {
		var info StreamInfo
		if info, err = b.store.Info(ctx); err == nil {
			// A stream that lost its data reports nothing deleted: what this
			// node read before may be missing from the page all the same.
			p.deleted = deletedBound(info)
			if lost := b.lost(info, headBefore); p.deleted.Less(lost) {
				p.deleted = lost
			}
		}
	}
	if err != nil && ctx.Err() == nil {
		b.logger.Warn("backfill read failed", zap.Stringer("from", p.from), zap.Error(err))
	}
	if err == nil {
		b.hooks.BackfillRead(len(events))
	}
	p.events, p.last, p.err = events, last, err
	p.index()
	p.ready.Store(true)

	b.mu.Lock()
	for i, q := range b.pending {
		if q == p {
			b.pending = append(b.pending[:i], b.pending[i+1:]...)
			break
		}
	}
	// An empty or failed read is not cached: the stream may grow, or Redis
	// come back, before the next request.
	if err == nil && !last.IsZero() {
		b.clock++
		p.used, p.cached = b.clock, true
		b.pages = append(b.pages, p)
		b.bytes += p.bytes
		b.shrinkLocked(p)
	}
	for _, c := range p.waiters {
		c.peer.Wake()
	}
	p.waiters = nil
	b.mu.Unlock()
}

// shrinkLocked drops least recently used pages until the cache fits, never
// keep (the page just read: its waiters are about to read it).
func (b *backfill) shrinkLocked(keep *page) {
	for b.bytes > b.limit && len(b.pages) > 1 {
		oldest := -1
		for i, p := range b.pages {
			if p != keep && (oldest < 0 || p.used < b.pages[oldest].used) {
				oldest = i
			}
		}
		p := b.pages[oldest]
		p.cached = false
		b.bytes -= p.bytes
		b.pages[oldest] = b.pages[len(b.pages)-1]
		b.pages[len(b.pages)-1] = nil
		b.pages = b.pages[:len(b.pages)-1]
	}
}

// close wakes every cursor still waiting so none hangs on a page that will
// never be read; their next Pull finds the Hub closed.
func (b *backfill) close() {
	b.mu.Lock()
	for _, p := range b.pending {
		for _, c := range p.waiters {
			c.peer.Wake()
		}
		p.waiters = nil
	}
	b.mu.Unlock()
}
