package bridge

import "fmt"

func (c *Cursor) debugString() string {
	s := fmt.Sprintf("mode=%d pos=%s caught=%v", c.mode, c.pos, c.caughtUp)
	if r := c.resume; r != nil && r.page != nil {
		s += fmt.Sprintf(" page from=%s last=%s ready=%v n=%d at=%d deleted=%s", r.page.from, r.page.last, r.page.ready.Load(), len(r.page.events), r.pageAt, r.page.deleted)
	}
	c.hub.w.mu.RLock()
	s += fmt.Sprintf(" complete=%s head=%s", c.hub.w.complete, c.hub.w.head)
	for _, lc := range c.lists {
		s += fmt.Sprintf(" [%s next=%d base=%d end=%d]", lc.l.name, lc.next, lc.l.base, lc.l.end())
	}
	c.hub.w.mu.RUnlock()
	return s
}
