package bridge

import (
	"sort"
	"strings"
	"sync"
)

// Memory accounting of the index, on top of Event.Size (which already counts
// the struct, its frame and one index slot): one log slot per event, one slot
// per further recipient list, and a fixed cost per non-empty list (map entry,
// struct, name). Slices grow by doubling and compact in place, so the real
// footprint of slots may be up to twice what is counted; docs/design.md.
const (
	slotBytes     = 8
	listBaseBytes = 128
)

// plist is the ordered positions (in the window log) of the events for one
// recipient: a user id, a group name, or broadcast. Entries are addressed by
// an absolute index that only grows, so a cursor's place in a list survives
// eviction and compaction, and the eviction mark is base plus the newest id
// evicted: a cursor whose next index is below base missed an event it had not
// yet examined, unless that event was not newer than its pos (a cursor that
// came from a node further along).
//
// A connected user's list exists from its connect, mostly empty: it holds
// the connection for wakes. Its slots are made on its first event, so such a
// list is 64 bytes (a size class) and its name.
//
// Guarded by window.mu.
type plist struct {
	q    *slotQueue // nil until the list's first event
	base uint64     // absolute index of its oldest live entry
	// evicted is the id of the newest event evicted from this list: a cursor
	// whose next index is below base lost an event only if its pos is older.
	evicted ID
	name    string
	conns   connSet // cursors reading this list (not for broadcast); a read list is never deleted
}

// slotQueue is a list's absolute log positions, oldest first, live from off.
type slotQueue struct {
	slots []uint64
	off   int
}

func (l *plist) len() int {
	if l.q == nil {
		return 0
	}
	return len(l.q.slots) - l.q.off
}

func (l *plist) end() uint64        { return l.base + uint64(l.len()) }
func (l *plist) at(i uint64) uint64 { return l.q.slots[l.q.off+int(i-l.base)] }
func (l *plist) newest() uint64     { return l.q.slots[len(l.q.slots)-1] }
func (l *plist) oldest() uint64     { return l.q.slots[l.q.off] }

func (l *plist) push(p uint64) {
	if l.q == nil {
		l.q = &slotQueue{}
	}
	l.q.slots = append(l.q.slots, p)
}

func (l *plist) popFront() {
	q := l.q
	q.off++
	l.base++
	if q.off == len(q.slots) {
		q.slots, q.off = q.slots[:0], 0
	} else if q.off >= 32 && q.off*2 >= len(q.slots) {
		n := copy(q.slots, q.slots[q.off:])
		q.slots, q.off = q.slots[:n], 0
	}
}

// window is the replay window: the newest events in stream order, bounded by
// bytes, with an index by recipient. It holds every deliverable stream entry
// with an id greater than complete, up to head.
//
// Every field is guarded by mu. Appends and evictions take it for writing;
// pulls and resume decisions take it for reading.
type window struct {
	mu    sync.RWMutex
	limit int64

	log   []*Event // live from off; absolute position of log[off] is first
	off   int
	first uint64
	bytes int64

	head     ID // newest id appended, or the stream's last generated id after Warm
	complete ID // the window holds every entry with an id greater than this
	// lostUpTo is this node's head when it saw Redis lose data it had read:
	// entries up to it may be gone from the stream without XINFO saying so
	// (the new stream reports nothing deleted). Zero when no loss was seen.
	lostUpTo ID
	// neverHad is where the stream Warm read never had an entry: after what
	// it reported deleted, before its first entry. An id there is from a
	// stream Redis lost before this node started.
	neverHad idRange

	users  map[string]*plist
	groups map[string]*plist
	all    *plist

	cursors []*Cursor // every registered connection, for broadcast wakes and the ticker
}

func newWindow(limit int64) *window {
	return &window{
		limit:  limit,
		users:  make(map[string]*plist),
		groups: make(map[string]*plist),
		all:    &plist{},
	}
}

func (w *window) lenLocked() int              { return len(w.log) - w.off }
func (w *window) endLocked() uint64           { return w.first + uint64(w.lenLocked()) }
func (w *window) eventLocked(p uint64) *Event { return w.log[w.off+int(p-w.first)] }

// oldestLocked is the oldest event held, if any.
func (w *window) oldestLocked() (ID, bool) {
	if w.lenLocked() == 0 {
		return ID{}, false
	}
	return w.log[w.off].ID, true
}

// holdsEventLocked reports whether the window holds an event with id.
func (w *window) holdsEventLocked(id ID) bool {
	live := w.log[w.off:]
	i := sort.Search(len(live), func(i int) bool { return !live[i].ID.Less(id) })
	return i < len(live) && live[i].ID == id
}

// newestEventLocked is the newest event this window held with an id at or
// before id: held, or else complete, when not newer: the newest
// evicted, or what Warm found deleted (gone from Redis anyway); zero when
// none.
func (w *window) newestEventLocked(id ID) ID {
	live := w.log[w.off:]
	i := sort.Search(len(live), func(i int) bool { return id.Less(live[i].ID) })
	if i > 0 {
		return live[i-1].ID
	}
	if !id.Less(w.complete) {
		return w.complete
	}
	return ID{}
}

// listLocked finds the list of a recipient; with create it makes a missing one.
// name may be a substring of a larger string; a new list keeps a copy so it
// does not pin an event's to field.
func (w *window) listLocked(kind RecipientKind, name string, create bool) *plist {
	var m map[string]*plist
	switch kind {
	case KindBroadcast:
		return w.all
	case KindUser:
		m = w.users
	default:
		m = w.groups
	}
	if l := m[name]; l != nil || !create {
		return l
	}
	l := &plist{name: strings.Clone(name)}
	m[l.name] = l
	return l
}

// dropListLocked deletes a user's or group's list (a user and a group may
// share a name: the map that holds this very list loses it).
func (w *window) dropListLocked(l *plist) {
	if w.users[l.name] == l {
		delete(w.users, l.name)
	} else if w.groups[l.name] == l {
		delete(w.groups, l.name)
	}
}

func listCost(l *plist) int64 { return listBaseBytes + int64(len(l.name)) }

// appendLocked adds ev (newer than head) and evicts from the old end until the
// window fits. It returns how many events were evicted.
func (w *window) appendLocked(ev *Event) int {
	p := w.endLocked()
	w.log = append(w.log, ev)
	cost := int64(ev.Size()) + slotBytes // the event and its log slot
	ForEachRecipient(ev.To, func(kind RecipientKind, name string) {
		l := w.listLocked(kind, name, true)
		n := l.len()
		if n > 0 && l.newest() == p {
			return // named twice in to: one slot, one delivery
		}
		if n == 0 {
			cost += listCost(l)
		}
		l.push(p)
		cost += slotBytes
	})
	w.bytes += cost
	w.head = ev.ID
	evicted := 0
	for w.bytes > w.limit && w.lenLocked() > 1 {
		w.evictOldestLocked()
		evicted++
	}
	return evicted
}

func (w *window) evictOldestLocked() {
	ev := w.log[w.off]
	p := w.first
	w.log[w.off] = nil
	w.off++
	w.first++
	cost := int64(ev.Size()) + slotBytes
	ForEachRecipient(ev.To, func(kind RecipientKind, name string) {
		l := w.listLocked(kind, name, false)
		if l == nil || l.len() == 0 || l.oldest() != p {
			return // named twice: already popped
		}
		l.popFront()
		l.evicted = ev.ID
		cost += slotBytes
		if l.len() == 0 {
			cost += listCost(l)
			if l.conns.empty() && l != w.all {
				w.dropListLocked(l)
			}
		}
	})
	w.bytes -= cost
	if w.complete.Less(ev.ID) {
		w.complete = ev.ID
	}
	if w.off == len(w.log) {
		w.log, w.off = w.log[:0], 0
	} else if w.off >= 64 && w.off*2 >= len(w.log) {
		n := copy(w.log, w.log[w.off:])
		clear(w.log[n:])
		w.log, w.off = w.log[:n], 0
	}
}

// searchLocked returns the absolute index of the first entry of l with an id
// greater than after (l.end() when none).
func (w *window) searchLocked(l *plist, after ID) uint64 {
	lo, hi := l.base, l.end()
	for lo < hi {
		mid := lo + (hi-lo)/2
		if after.Less(w.eventLocked(l.at(mid)).ID) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}
