package bridge

import "time"

// The recipient lists double as the wake index: each user or group list
// holds the cursors reading it, so finding the connections to wake for an
// event is the same map look-up that appending it made, and a connection
// costs no second index (it was a sharded registry of its own, ~90 bytes per
// idle connection). Broadcast wakes walk a slice of all cursors. Sets and
// that slice are guarded by window.mu: changed under the write
// lock by Accept and Closed, read under the read lock by wakes and the
// ticker. Peer.Wake, which never blocks, is called under the read lock, so
// once Closed has returned no wake reaches the peer.

// connSet is the cursors reading one user's or group's list. Most users have
// one connection, so the first cursor is held inline and a map is made only
// for the others. A list whose set is empty has no reader and is deleted
// once it holds no events.
type connSet struct {
	one  *Cursor
	more map[*Cursor]struct{}
}

func (s *connSet) empty() bool { return s.one == nil }

func (s *connSet) add(c *Cursor) {
	switch {
	case s.one == nil:
		s.one = c
	case s.one != c:
		if s.more == nil {
			s.more = make(map[*Cursor]struct{})
		}
		s.more[c] = struct{}{}
	}
}

func (s *connSet) remove(c *Cursor) {
	if s.one != c {
		delete(s.more, c)
	} else {
		s.one = nil
		for o := range s.more {
			s.one = o
			delete(s.more, o)
			break
		}
	}
	if len(s.more) == 0 {
		s.more = nil
	}
}

func (s *connSet) each(fn func(*Cursor)) {
	if s.one == nil {
		return
	}
	fn(s.one)
	for c := range s.more {
		fn(c)
	}
}

// registerLocked adds c to the sets of its user's and groups' lists and to
// the window's list of all cursors. Called with window.mu held for writing.
func (c *Cursor) registerLocked(w *window) {
	for _, lc := range c.lists[:len(c.lists)-1] {
		lc.l.conns.add(c)
	}
	c.since = time.Now().UnixNano()
	c.slot = int32(len(w.cursors))
	w.cursors = append(w.cursors, c)
}

// unregisterLocked removes c from its lists' sets and deletes the lists left
// with neither events nor readers. Called with window.mu held for writing.
func (c *Cursor) unregisterLocked(w *window) {
	last := w.cursors[len(w.cursors)-1]
	w.cursors[c.slot], last.slot = last, c.slot
	w.cursors[len(w.cursors)-1] = nil
	w.cursors = w.cursors[:len(w.cursors)-1]
	for _, lc := range c.lists[:len(c.lists)-1] {
		l := lc.l
		l.conns.remove(c)
		if l.conns.empty() && l.len() == 0 {
			w.dropListLocked(l)
		}
	}
}

func wakeCursor(c *Cursor) { c.peer.Wake() }

// wakeLocked wakes the connections of one recipient item. A connection
// named twice by one event is woken twice; Wake coalesces, and the cursor
// delivers once. Called with window.mu held for reading.
func (w *window) wakeLocked(kind RecipientKind, name string) {
	if kind == KindBroadcast {
		w.forEachCursorLocked(wakeCursor)
		return
	}
	if l := w.listLocked(kind, name, false); l != nil {
		l.conns.each(wakeCursor)
	}
}

// forEachCursorLocked calls fn for every connection. Called with window.mu
// held.
func (w *window) forEachCursorLocked(fn func(*Cursor)) {
	for _, c := range w.cursors {
		fn(c)
	}
}
