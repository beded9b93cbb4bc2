package streams

import (
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// Entry is one stream entry of a batched message (Config.Batched).
type Entry struct {
	// ID is the entry id, <ms>-<seq>.
	ID string
	// Fields are the entry's fields, as in a per-entry message's metadata
	// without the _notifybridge_ keys.
	Fields map[string]string
}

// batchState is what a batched message carries in its context.
type batchState struct {
	entries []Entry
	settled atomic.Int64
}

type batchKey struct{}

// Entries returns the entries of a batched message, in stream order, or nil
// for a message that carries one entry in its metadata (Config.Batched off,
// or a message from another Subscriber). The handler may read them, not
// change them.
//
// They ride in the message's context rather than its payload so that
// nothing is copied or encoded between the read and the handler.
func Entries(msg *message.Message) []Entry {
	if b, ok := msg.Context().Value(batchKey{}).(*batchState); ok {
		return b.entries
	}
	return nil
}

// Settled tells the Subscriber that the first n entries of a batched message
// are done with (taken, or dead-lettered). If the message is then nacked, or
// not settled before Close, those n are acknowledged and only the rest is
// sent again; without it the whole batch would be. It does nothing for a
// message that is not batched.
func Settled(msg *message.Message, n int) {
	if b, ok := msg.Context().Value(batchKey{}).(*batchState); ok {
		b.settled.Store(int64(n))
	}
}

// toEntries converts a read batch, leaving out the ids Redis returned
// without fields (pending entries trimmed since), which are returned in
// trimmed for the caller to acknowledge.
func toEntries(batch []redis.XMessage) (entries []Entry, trimmed []string) {
	entries = make([]Entry, 0, len(batch))
	for i := range batch {
		xm := &batch[i]
		if len(xm.Values) == 0 {
			trimmed = append(trimmed, xm.ID)
			continue
		}
		fields := make(map[string]string, len(xm.Values))
		for k, v := range xm.Values {
			if s, ok := v.(string); ok {
				fields[k] = s
			}
		}
		entries = append(entries, Entry{ID: xm.ID, Fields: fields})
	}
	return entries, trimmed
}
