package bridge

// Presence counts this node's connections per user and per group (a
// connection of a user in two groups counts once for each). It walks the
// connections under the window's read lock, so it costs nothing per event;
// callers run it every few seconds.
func (h *Hub) Presence() (users, groups map[string]int) {
	users, groups = map[string]int{}, map[string]int{}
	w := h.w
	w.mu.RLock()
	defer w.mu.RUnlock()
	for _, c := range w.cursors {
		users[c.userID()]++
		for _, lc := range c.groupLists() {
			groups[lc.l.name]++
		}
	}
	return users, groups
}
