package handlers

import (
	"bytes"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/transport/streams"
)

// TestPreparedHandlingEqualsUnprepared: the handler appends the same events
// and fails with the same errors whether the Subscriber let prepare decode
// the message ahead or not (another Subscriber, or prepare panicked).
func TestPreparedHandlingEqualsUnprepared(t *testing.T) {
	entries := []map[string]string{
		{"to": "user:1,group:ops", "type": "alarm.x", "data": `{"a":1}`},
		{"to": "*", "data": `[1,2]`},
		{"to": "user:1", "data": `{"a":`},
		{"data": `1`},
		{"to": "user:1", "type": "", "data": `1`},
		{"to": "user:1", "data": `1`, streams.MetadataEntryID: "bad-id"},
	}
	newMsg := func(fields map[string]string) *message.Message {
		m := message.NewMessage("1700000000000-7", nil)
		m.Metadata[streams.MetadataEntryID] = "1700000000000-7"
		for k, v := range fields {
			m.Metadata[k] = v
		}
		return m
	}
	for i, fields := range entries {
		var got [2]struct {
			ev  *bridge.Event
			err error
		}
		for j, prepared := range []bool{false, true} {
			w := &window{}
			h := &ingestHandler{app: w, lim: bridge.DefaultLimits, hooks: NopHooks{}}
			m := newMsg(fields)
			if prepared {
				h.prepare(m)
				if m.Context().Value(decodedKey{}) == nil {
					t.Fatalf("entry %d: prepare left nothing", i)
				}
			}
			got[j].err = h.handle(m)
			if len(w.events) > 0 {
				got[j].ev = w.events[0]
			}
		}
		a, b := got[0], got[1]
		if (a.err == nil) != (b.err == nil) || a.err != nil && a.err.Error() != b.err.Error() {
			t.Errorf("entry %d: errors differ: %v / %v", i, a.err, b.err)
		}
		if (a.ev == nil) != (b.ev == nil) || a.ev != nil && (a.ev.ID != b.ev.ID || !bytes.Equal(a.ev.Frame, b.ev.Frame) || a.ev.To != b.ev.To) {
			t.Errorf("entry %d: events differ: %+v / %+v", i, a.ev, b.ev)
		}
		if i < 2 && a.ev == nil {
			t.Errorf("entry %d: good entry not appended: %v", i, a.err)
		}
		if i >= 2 && a.err == nil {
			t.Errorf("entry %d: bad entry accepted", i)
		}
	}
}
