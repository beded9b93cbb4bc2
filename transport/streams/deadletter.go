package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// DeadLetterSuffix makes the dead-letter stream key: <stream>:dead.
const DeadLetterSuffix = ":dead"

// DeadLetter appends undeliverable entries to <stream>:dead, trimmed with
// MAXLEN ~ maxLen. It is safe for concurrent use.
type DeadLetter struct {
	client redis.UniversalClient
	key    string
	maxLen int64
}

// NewDeadLetter returns the writer for stream's dead-letter stream. maxLen is
// dead_maxlen (contract default 100000) and must be > 0.
func NewDeadLetter(client redis.UniversalClient, stream string, maxLen int64) (*DeadLetter, error) {
	if maxLen <= 0 {
		return nil, errors.New("dead_maxlen: must be > 0")
	}
	return &DeadLetter{client: client, key: stream + DeadLetterSuffix, maxLen: maxLen}, nil
}

// Key is the dead-letter stream key.
func (d *DeadLetter) Key() string { return d.key }

// Write appends one dead letter: the original fields (sorted by name, since a
// map has no order; the reserved _notifybridge_ keys left out), then id and
// reason. They come last so that they win for readers that keep the last
// value of a field given twice. It returns the dead letter's new id.
func (d *DeadLetter) Write(ctx context.Context, id string, fields map[string]string, reason string) (string, error) {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if !strings.HasPrefix(k, MetadataPrefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	values := make([]any, 0, 2*len(keys)+4)
	for _, k := range keys {
		values = append(values, k, fields[k])
	}
	values = append(values, "id", id, "reason", reason)
	return d.client.XAdd(ctx, &redis.XAddArgs{
		Stream: d.key,
		MaxLen: d.maxLen,
		Approx: true,
		Values: values,
	}).Result()
}

// DeadEntry is one dead letter as an operator sees it.
type DeadEntry struct {
	DeadID   string            // the dead letter's own id
	OrigID   string            // the original entry's id (field id)
	Reason   string            // why it was dead-lettered (field reason)
	Original map[string]string // the original fields
}

// List returns up to count dead letters, newest first.
func (d *DeadLetter) List(ctx context.Context, count int64) ([]DeadEntry, error) {
	msgs, err := d.client.XRevRangeN(ctx, d.key, "+", "-", count).Result()
	if err != nil {
		return nil, err
	}
	out := make([]DeadEntry, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, deadEntry(m))
	}
	return out, nil
}

func deadEntry(m redis.XMessage) DeadEntry {
	e := DeadEntry{DeadID: m.ID, Original: make(map[string]string, len(m.Values))}
	for k, v := range m.Values {
		s, _ := v.(string)
		switch k {
		case "id":
			e.OrigID = s
		case "reason":
			e.Reason = s
		default:
			e.Original[k] = s
		}
	}
	return e
}

// ErrNoDeadLetter says a requeue named an id that <stream>:dead does not hold.
var ErrNoDeadLetter = errors.New("no such dead letter")

// Requeue appends a dead letter's original fields to stream again (it gets a
// new id and is read like any entry) and deletes the dead letter, in one
// MULTI/EXEC so the entry is never in both or in neither. A field of the
// original entry named id or reason is not restored (the dead letter's own
// fields of those names hide it); the contract ignores such fields anyway.
// It returns the new entry id.
func (d *DeadLetter) Requeue(ctx context.Context, stream, deadID string) (string, error) {
	msgs, err := d.client.XRange(ctx, d.key, deadID, deadID).Result()
	if err != nil {
		return "", err
	}
	if len(msgs) == 0 {
		return "", fmt.Errorf("%w: %s", ErrNoDeadLetter, deadID)
	}
	e := deadEntry(msgs[0])
	keys := make([]string, 0, len(e.Original))
	for k := range e.Original {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	values := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		values = append(values, k, e.Original[k])
	}
	if len(values) == 0 {
		return "", fmt.Errorf("dead letter %s has no original fields to requeue", deadID)
	}
	var add *redis.StringCmd
	_, err = d.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		add = p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: values})
		p.XDel(ctx, d.key, deadID)
		return nil
	})
	if err != nil {
		return "", err
	}
	return add.Val(), nil
}
