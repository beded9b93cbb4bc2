package bridge

import (
	"context"
	"fmt"

	"go.uber.org/zap"
)

// What the node knows of entries gone from Redis: deleted (XINFO says so), or
// lost with Redis's data (it does not), and how a resume id is judged against
// both. The gap rule itself is decideGap (accept.go).

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
	foreign            bool // the id is from a stream this node never read (foreignHole)
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

// foreignHole reports whether id, inside the window's span but no event it
// holds, was never an entry of the stream: not in it (XRANGE id id) and not
// recorded deleted. It is then from a stream this node did not read, such as
// the old primary's newest entries that a promoted replica never got: what
// followed it there is in neither the stream nor the window; an id of the
// stream this node read before Redis lost it is not one. (An id set by
// XSETID without an entry looks the same: a gap that skips nothing.) What a
// replica lost after an id it does hold is unknowable.
func (h *Hub) foreignHole(id ID, getInfo func(bool) (*StreamInfo, error)) (bool, error) {
	ctx, cancel := context.WithTimeout(h.ctx, storeTimeout)
	_, last, err := h.store.Range(ctx, id, 1)
	cancel()
	if err != nil {
		return false, fmt.Errorf("bridge: reading the stream at %s: %w", id, err)
	}
	if last == id {
		return false, nil // an entry of this stream, undecodable or a head
	}
	info, err := getInfo(false)
	if err != nil {
		return false, err
	}
	// Up to lostUpTo (as of this XINFO, which getInfo checked against the
	// head) the id may be from the stream this node read and Redis lost
	// since: the window holds what followed it.
	h.w.mu.RLock()
	lost := h.w.lostUpTo
	h.w.mu.RUnlock()
	return lost.Less(id) && deletedBound(*info).Less(id) && !info.LastGeneratedID.Less(id), nil
}
