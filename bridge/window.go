package bridge

import (
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
// Guarded by window.mu.
type plist struct {
	slots []uint64 // absolute log positions, oldest first; live from off
	off   int
	base  uint64 // absolute index of slots[off]
	// evicted is the id of the newest event evicted from this list: a cursor
	// whose next index is below base lost an event only if its pos is older.
	evicted ID
	name    string
	conns   connSet // cursors reading this list (not for broadcast); a read list is never deleted
	kind    RecipientKind
}

func (l *plist) len() int           { return len(l.slots) - l.off }
func (l *plist) end() uint64        { return l.base + uint64(l.len()) }
func (l *plist) at(i uint64) uint64 { return l.slots[l.off+int(i-l.base)] }

func (l *plist) push(p uint64) { l.slots = append(l.slots, p) }

func (l *plist) popFront() {
	l.off++
	l.base++
	if l.off == len(l.slots) {
		l.slots, l.off = l.slots[:0], 0
	} else if l.off >= 32 && l.off*2 >= len(l.slots) {
		n := copy(l.slots, l.slots[l.off:])
		l.slots, l.off = l.slots[:n], 0
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
		all:    &plist{kind: KindBroadcast},
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
	l := &plist{kind: kind, name: strings.Clone(name)}
	m[l.name] = l
	return l
}

func (w *window) dropListLocked(l *plist) {
	switch l.kind {
	case KindUser:
		delete(w.users, l.name)
	case KindGroup:
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
		if n > 0 && l.slots[len(l.slots)-1] == p {
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
		if l == nil || l.len() == 0 || l.slots[l.off] != p {
			return // named twice: already popped
		}
		l.popFront()
		l.evicted = ev.ID
		cost += slotBytes
		if l.len() == 0 {
			cost += listCost(l)
			if l.conns.empty() && l.kind != KindBroadcast {
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
