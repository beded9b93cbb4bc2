package bridge

import "slices"

// A cursor's replay from Redis pages, until the window reaches it.

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
func (c *Cursor) consumePageLocked(w *window, p *page, b *batch) pageAction {
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
		if b.full() {
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
		c.deliver(b, e)
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
