package bridgetest

import (
	"fmt"
	"slices"

	"github.com/notifybridge/notifybridge/bridge"
)

// The oracle: what each connection should have received, and when a 1013 was
// due.

// checkSlow: a 1013 is due only when an event the connection still needed
// (after what it received, addressed to it, of a type it wants) left the
// window.
func (s *schedule) checkSlow(c *propConn, cause string) error {
	var anyRecipient bool
	switch cause {
	case causeEvicted:
	case causeTrimmed:
		// Trimmed during replay: the lost entries are gone, so whether they
		// were for this connection is unknowable; any lost entry after known
		// will do.
		anyRecipient = true
		if c.blind {
			return nil
		}
	default:
		return fmt.Errorf("%s closed with 1013, cause %q", c.name, cause)
	}
	known := c.p
	for _, id := range c.tc.ids() {
		known, _ = bridge.ParseID(id)
	}
	first := s.windowFirst(c.n)
	for _, e := range s.hist[:first] {
		if known.Less(e.ID) && !c.lost[e.ID] &&
			(anyRecipient || addressedTo(e, c.user, c.groups) && c.types.Match(e.Type)) {
			return nil
		}
	}
	return fmt.Errorf("%s closed with 1013 (%s) though nothing it needed left the window (known %s, window from hist[%d])", c.name, cause, known, first)
}

func addressedTo(e *bridge.Event, user string, groups []string) bool {
	found := false
	bridge.ForEachRecipient(e.To, func(kind bridge.RecipientKind, name string) {
		switch kind {
		case bridge.KindBroadcast:
			found = true
		case bridge.KindUser:
			found = found || name == user
		case bridge.KindGroup:
			found = found || slices.Contains(groups, name)
		}
	})
	return found
}

func (s *schedule) verify(c *propConn) error {
	var want []string
	wantUpTo := 0 // events at or before catchUp
	for _, e := range s.hist {
		if c.p.Less(e.ID) && !c.lost[e.ID] && addressedTo(e, c.user, c.groups) && c.types.Match(e.Type) {
			want = append(want, e.ID.String())
			if !c.catchUp.Less(e.ID) {
				wantUpTo++
			}
		}
	}
	frames := c.tc.frames
	if c.mayGap && !c.wantGap && len(frames) > 0 && frames[0].Control == "gap" {
		// A conservative gap: allowed, but it must still name the right ids
		// and nothing may be skipped for it.
		if frames[0].Requested != c.requested.String() || frames[0].Oldest != c.oldest.String() {
			return fmt.Errorf("conservative gap %v, want requested %s oldest %s", frames[0], c.requested, c.oldest)
		}
		frames = frames[1:]
		s.st.conservative++
	}
	if c.wantGap {
		if len(frames) == 0 && (c.closed || c.slow) {
			return nil
		}
		if len(frames) == 0 || frames[0].Control != "gap" {
			return fmt.Errorf("want a gap frame first")
		}
		if frames[0].Requested != c.requested.String() || frames[0].Oldest != c.oldest.String() {
			return fmt.Errorf("gap %v, want requested %s oldest %s", frames[0], c.requested, c.oldest)
		}
		frames = frames[1:]
	}
	var got []string
	caughtAt := -1
	type cursorAt struct {
		k    int
		last bridge.ID
	}
	var cursors []cursorAt
	for _, f := range frames {
		switch f.Control {
		case "":
			got = append(got, f.ID)
		case "caught_up":
			if caughtAt >= 0 {
				return fmt.Errorf("caught_up twice")
			}
			caughtAt = len(got)
			if f.Last != c.upLast.String() {
				return fmt.Errorf("caught_up.last %s, want %s", f.Last, c.upLast)
			}
		case "cursor":
			if caughtAt < 0 {
				return fmt.Errorf("cursor frame before caught_up")
			}
			id, err := bridge.ParseID(f.Last)
			if err != nil {
				return fmt.Errorf("cursor frame: %v", err)
			}
			cursors = append(cursors, cursorAt{len(got), id})
		default:
			return fmt.Errorf("unexpected frame %v", f)
		}
	}
	if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
		return fmt.Errorf("events\n got %v\nwant %v", got, want)
	}
	if !c.closed && !c.slow {
		if len(got) != len(want) {
			return fmt.Errorf("missing events\n got %v\nwant %v", got, want)
		}
		if caughtAt < 0 {
			return fmt.Errorf("no caught_up")
		}
	}
	// Resuming from a cursor frame's last loses nothing and repeats nothing:
	// exactly the wanted events up to it came before it.
	for _, cf := range cursors {
		n := 0
		for _, id := range want {
			if p, _ := bridge.ParseID(id); !cf.last.Less(p) {
				n++
			}
		}
		if n != cf.k {
			return fmt.Errorf("cursor %s after %d events, but %d wanted events are at or before it", cf.last, cf.k, n)
		}
	}
	if caughtAt >= 0 && caughtAt != wantUpTo {
		return fmt.Errorf("caught_up after %d events, want after %d (head at connect %s)", caughtAt, wantUpTo, c.catchUp)
	}
	return nil
}
