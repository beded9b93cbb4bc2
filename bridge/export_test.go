package bridge

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// Exported for the external tests of this package (bridge_test), which run
// bridge/bridgetest's property runner over the in-memory store.

// MemBackend is memStore as a bridgetest.Backend.
type MemBackend = memBackend

// NewMemBackend returns an empty in-memory stream whose ids step 0–2 ms at
// random; one in four behaves like miniredis (no max-deleted-entry-id).
func NewMemBackend(rnd *rand.Rand) MemBackend {
	m := newMemStore()
	m.hideMaxDel = rnd.IntN(4) == 0
	return memBackend{memStore: m, rnd: rnd}
}

// RequestCursor asks for a cursor frame, as the ticker does after silence.
func RequestCursor(c *Cursor) { c.wantCursor.Store(true) }

// CursorDebug describes a cursor's internal state for failure messages.
func CursorDebug(c *Cursor) string { return c.debugString() }

type memBackend struct {
	*memStore
	rnd *rand.Rand
}

func (b memBackend) Add(tb testing.TB, to, typ, data string) *Event {
	return b.add(tb, to, typ, data, uint64(b.rnd.IntN(3)))
}

func (b memBackend) AddBad() ID { return b.addBad() }

func (b memBackend) Flush() { b.flush() }

func (b memBackend) TrimThrough(last ID) {
	b.mu.Lock()
	n := 0
	for n < len(b.entries) && !last.Less(b.entries[n].id) {
		n++
	}
	b.mu.Unlock()
	b.trim(n)
}

func addressedTo(e *Event, user string, groups []string) bool {
	found := false
	ForEachRecipient(e.To, func(kind RecipientKind, name string) {
		switch kind {
		case KindBroadcast:
			found = true
		case KindUser:
			found = found || name == user
		case KindGroup:
			found = found || slices.Contains(groups, name)
		}
	})
	return found
}
