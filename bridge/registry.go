package bridge

import (
	"hash/maphash"
	"sync"
)

const registryShards = 64

// registry finds the connections to wake for an event: by user id, by group
// name, and all of them for broadcast. It is sharded by hash of the name so
// connects, disconnects and fan-out of unrelated recipients do not contend;
// fan-out takes read locks only and calls Peer.Wake, which never blocks, under
// them (so that after unregister returns no wake reaches a closed peer).
//
// Shard locks are leaves: nothing else is locked while one is held.
type registry struct {
	seed   maphash.Seed
	shards [registryShards]regShard
}

// regShard is guarded by mu.
type regShard struct {
	mu     sync.RWMutex
	users  map[string]regSet
	groups map[string]regSet
	// all holds the cursors whose user hashes to this shard: broadcast and
	// the cursor ticker walk every shard's all.
	all map[*Cursor]struct{}
}

// regSet is the cursors of one user or group. Most users have one
// connection, so the first cursor is held inline and a map is made only for
// the others: an idle connection of a user alone costs a map slot, not a map.
// A set in a registry map always has one != nil.
type regSet struct {
	one  *Cursor
	more map[*Cursor]struct{}
}

func newRegistry() *registry {
	r := &registry{seed: maphash.MakeSeed()}
	for i := range r.shards {
		s := &r.shards[i]
		s.users = make(map[string]regSet)
		s.groups = make(map[string]regSet)
		s.all = make(map[*Cursor]struct{})
	}
	return r
}

func (r *registry) shard(name string) *regShard {
	return &r.shards[maphash.String(r.seed, name)%registryShards]
}

func addTo(m map[string]regSet, name string, c *Cursor) {
	set, ok := m[name]
	if !ok {
		m[name] = regSet{one: c}
		return
	}
	if set.one == c {
		return
	}
	if set.more == nil {
		set.more = make(map[*Cursor]struct{})
		m[name] = set
	}
	set.more[c] = struct{}{}
}

func removeFrom(m map[string]regSet, name string, c *Cursor) {
	set, ok := m[name]
	if !ok {
		return
	}
	if set.one == c {
		set.one = nil
		for o := range set.more {
			set.one = o
			delete(set.more, o)
			break
		}
		if set.one == nil {
			delete(m, name)
			return
		}
	} else {
		delete(set.more, c)
	}
	if len(set.more) == 0 {
		set.more = nil
	}
	m[name] = set
}

func (r *registry) add(c *Cursor) {
	user := c.userID()
	s := r.shard(user)
	s.mu.Lock()
	addTo(s.users, user, c)
	s.all[c] = struct{}{}
	s.mu.Unlock()
	for _, g := range c.groupLists() {
		s := r.shard(g.l.name)
		s.mu.Lock()
		addTo(s.groups, g.l.name, c)
		s.mu.Unlock()
	}
}

func (r *registry) remove(c *Cursor) {
	user := c.userID()
	s := r.shard(user)
	s.mu.Lock()
	removeFrom(s.users, user, c)
	delete(s.all, c)
	s.mu.Unlock()
	for _, g := range c.groupLists() {
		s := r.shard(g.l.name)
		s.mu.Lock()
		removeFrom(s.groups, g.l.name, c)
		s.mu.Unlock()
	}
}

// wake wakes the connections of one recipient item. A connection named twice
// by one event is woken twice; Wake coalesces, and the cursor delivers once.
func (r *registry) wake(kind RecipientKind, name string) {
	if kind == KindBroadcast {
		r.forEach(func(c *Cursor) { c.peer.Wake() })
		return
	}
	s := r.shard(name)
	s.mu.RLock()
	m := s.users
	if kind == KindGroup {
		m = s.groups
	}
	if set, ok := m[name]; ok {
		set.one.peer.Wake()
		for c := range set.more {
			c.peer.Wake()
		}
	}
	s.mu.RUnlock()
}

// forEach calls fn for every registered cursor, one shard read lock at a time.
func (r *registry) forEach(fn func(c *Cursor)) {
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.RLock()
		for c := range s.all {
			fn(c)
		}
		s.mu.RUnlock()
	}
}
