package bridge

import (
	"strings"
	"time"
)

// ConnInfo describes one connection for GET /debug/connections. It holds
// no token: the core never sees one.
type ConnInfo struct {
	User      string        `json:"user"`
	Groups    []string      `json:"groups"`
	Types     string        `json:"types"` // "*" for all
	Transport string        `json:"transport"`
	Remote    string        `json:"remote"`
	Since     time.Time     `json:"connected_since"`
	Position  string        `json:"position"` // last id the drainer examined, as of its last pull
	Lag       time.Duration `json:"lag_ns"`   // of position behind the head's id time
}

// Connections lists up to limit of this node's connections of one user or
// group (kind KindUser or KindGroup), and how many there are in all. It walks
// only that list's readers, under the window's read lock.
func (h *Hub) Connections(kind RecipientKind, name string, limit int) (infos []ConnInfo, total int) {
	w := h.w
	w.mu.RLock()
	defer w.mu.RUnlock()
	l := w.listLocked(kind, name, false)
	if l == nil {
		return nil, 0
	}
	head := w.head
	l.conns.each(func(c *Cursor) {
		total++
		if len(infos) < limit {
			infos = append(infos, c.info(head))
		}
	})
	return infos, total
}

func (c *Cursor) info(head ID) ConnInfo {
	in := ConnInfo{User: c.userID(), Types: "*", Transport: "websocket", Since: time.Unix(0, c.since)}
	for _, lc := range c.groupLists() {
		in.Groups = append(in.Groups, lc.l.name)
	}
	if c.types != nil && !c.types.any {
		in.Types = strings.Join(append(append([]string{}, c.types.exact...), prefixPatterns(c.types.prefixes)...), ",")
	}
	if p, ok := c.peer.(interface{ RemoteIP() string }); ok {
		in.Remote = p.RemoteIP()
	}
	if p, ok := c.peer.(interface{ Transport() string }); ok {
		in.Transport = p.Transport()
	}
	pos := ID{Ms: c.seenMs.Load(), Seq: c.seenSeq.Load()}
	in.Position = pos.String()
	if pos.Less(head) {
		in.Lag = time.Duration(head.Ms-pos.Ms) * time.Millisecond
	}
	return in
}

func prefixPatterns(prefixes []string) []string {
	out := make([]string, len(prefixes))
	for i, p := range prefixes {
		out[i] = p + "*"
	}
	return out
}
