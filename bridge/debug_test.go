package bridge

import "fmt"

func (c *Cursor) debugString() string {
	s := fmt.Sprintf("mode=%d pos=%s caught=%v", c.mode, c.pos, c.caughtUp)
	if c.page != nil {
		s += fmt.Sprintf(" page from=%s last=%s ready=%v n=%d at=%d deleted=%s", c.page.from, c.page.last, c.page.ready.Load(), len(c.page.events), c.pageAt, c.page.deleted)
	}
	c.hub.w.mu.RLock()
	s += fmt.Sprintf(" complete=%s head=%s", c.hub.w.complete, c.hub.w.head)
	for i, l := range c.lists {
		s += fmt.Sprintf(" [%s next=%d base=%d end=%d]", l.name, c.next[i], l.base, l.end())
	}
	c.hub.w.mu.RUnlock()
	return s
}
