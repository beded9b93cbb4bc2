package bridge

import (
	"context"
	"errors"
	"fmt"
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
	start := time.Now()
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
		zap.Stringer("group_start", newest), zap.Duration("took", time.Since(start)))
	return newest, nil
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

// WindowFloor is the newest id the window does not vouch for: every entry
// after it up to Head is an event the window holds, or undecodable. Right
// after Warm, entries up to it are the ones warm start did not read.
func (h *Hub) WindowFloor() ID {
	h.w.mu.RLock()
	defer h.w.mu.RUnlock()
	return h.w.complete
}
