package streams

import (
	"context"

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

type entriesKey struct{}

// Entries returns the entries of a batched message, in stream order, or nil
// for a message that carries one entry in its metadata (Config.Batched off,
// or a message from another Subscriber). The handler may read them, not
// change them: a redelivery after a Nack carries the same slice.
//
// They ride in the message's context rather than its payload so that
// nothing is copied or encoded between the read and the handler.
func Entries(msg *message.Message) []Entry {
	entries, _ := msg.Context().Value(entriesKey{}).([]Entry)
	return entries
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

func withEntries(ctx context.Context, entries []Entry) context.Context {
	return context.WithValue(ctx, entriesKey{}, entries)
}
