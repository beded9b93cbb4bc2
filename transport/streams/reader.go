package streams

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Reader reads a stream outside the consumer group: ranges for warm start and
// resume, and XINFO STREAM. It is safe for concurrent use.
type Reader struct {
	client redis.UniversalClient
	stream string
}

// NewReader returns a Reader of stream.
func NewReader(client redis.UniversalClient, stream string) *Reader {
	return &Reader{client: client, stream: stream}
}

// Range returns up to count entries with id >= from, oldest first
// (XRANGE stream from + COUNT count). A missing stream reads as empty.
func (r *Reader) Range(ctx context.Context, from string, count int64) ([]redis.XMessage, error) {
	return r.client.XRangeN(ctx, r.stream, from, "+", count).Result()
}

// RevRange returns up to count entries with id <= before, newest first
// (XREVRANGE stream before - COUNT count). A missing stream reads as empty.
func (r *Reader) RevRange(ctx context.Context, before string, count int64) ([]redis.XMessage, error) {
	return r.client.XRevRangeN(ctx, r.stream, before, "-", count).Result()
}

// Info is what XINFO STREAM says of a stream; ids are as Redis writes them.
type Info struct {
	Exists          bool
	Length          int64
	FirstID         string // "" when the stream is empty
	LastGeneratedID string
	// MaxDeletedID is max-deleted-entry-id and EntriesAdded entries-added
	// (Redis 7+); MaxDeletedKnown is false when the server does not report
	// them (older Redis, miniredis). Beware: Redis moves max-deleted-entry-id
	// on XDEL only, not when XTRIM or XADD MAXLEN/MINID trim the stream; an
	// entry count below EntriesAdded is what shows trimming.
	MaxDeletedID    string
	EntriesAdded    int64
	MaxDeletedKnown bool
}

// Info runs XINFO STREAM. A missing stream is not an error: Exists is false.
func (r *Reader) Info(ctx context.Context) (Info, error) {
	res, err := r.client.XInfoStream(ctx, r.stream).Result()
	if err != nil {
		if isNoSuchKey(err) {
			return Info{}, nil
		}
		return Info{}, err
	}
	return Info{
		Exists:          true,
		Length:          res.Length,
		FirstID:         res.FirstEntry.ID,
		LastGeneratedID: res.LastGeneratedID,
		MaxDeletedID:    res.MaxDeletedEntryID,
		EntriesAdded:    res.EntriesAdded,
		MaxDeletedKnown: res.MaxDeletedEntryID != "",
	}, nil
}

// isNoSuchKey matches the error of XINFO STREAM on a missing key (Redis says
// "ERR no such key", miniredis may phrase it differently).
func isNoSuchKey(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "no such key") || strings.Contains(s, "key does not exist")
}
