package handlers

import (
	"context"
	"maps"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/transport/streams"
)

// A node that starts behind its stream moves its consumer group past the
// entries warm start read (they are in the window) and past the older ones
// the window could not hold (they would be dropped on arrival). Ingest then
// never reads an entry twice and is live at once. What those skipped entries
// still owe is their dead letter: Sweep reads them once more, decoding only,
// and writes a dead letter for each that does not decode, with the same
// reason ingest would have given.

// BadEntry is an entry that did not decode, kept for its dead letter.
type BadEntry struct {
	ID     bridge.ID
	Fields map[string]string
	Err    error
}

// CollectUndecodable returns a ReportUndecodable callback that keeps copies
// of the entries it hears of in *out.
func CollectUndecodable(out *[]BadEntry) func(bridge.ID, map[string]string, error) {
	return func(id bridge.ID, fields map[string]string, err error) {
		*out = append(*out, BadEntry{ID: id, Fields: maps.Clone(fields), Err: err})
	}
}

// DeadLetterBad writes one dead letter for e, as the ingest router would.
func DeadLetterBad(ctx context.Context, dl DeadLetterWriter, hooks Hooks, e BadEntry) error {
	if _, err := dl.Write(ctx, e.ID.String(), e.Fields, reasonOf(e.Err)); err != nil {
		hooks.DeadLetterFailed()
		return err
	}
	hooks.DeadLettered(true)
	return nil
}

// Sweep reads the entries after from up to and including to, decodes each
// and dead-letters those that do not decode. After every page it reports the
// last id it finished with to done (which persists it, so a restart goes on
// from there); an error from dl or done stops it and is returned. The caller
// retries: an entry is dead-lettered at least once.
func Sweep(ctx context.Context, r *streams.Reader, lim bridge.Limits, dl DeadLetterWriter, hooks Hooks,
	from, to bridge.ID, page int, done func(bridge.ID) error) error {
	fields := make(map[string]string)
	for from.Less(to) {
		msgs, err := r.Range(ctx, from.Next().String(), int64(page))
		if err != nil {
			return err
		}
		last, finished := from, len(msgs) < page // a short page: nothing more in the range
		for _, m := range msgs {
			id, err := bridge.ParseID(m.ID)
			if err != nil {
				continue // Redis writes every id; never happens
			}
			if to.Less(id) {
				finished = true
				break
			}
			last = id
			entryFields(fields, m.Values)
			if _, err := DecodeEntry(id, fields, lim); err != nil {
				if err := DeadLetterBad(ctx, dl, hooks, BadEntry{ID: id, Fields: fields, Err: err}); err != nil {
					return err
				}
			}
		}
		if finished {
			last = to
		}
		if err := done(last); err != nil {
			return err
		}
		from = last
	}
	return nil
}
