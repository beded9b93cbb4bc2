package streams

import (
	"context"
	"errors"
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
