// Package streams reads and writes Redis Streams for notifybridge: a Watermill
// Subscriber over one consumer group, a Reader for ranges and stream info, the
// dead-letter writer and the retention Trimmer. It knows nothing of the bridge
// event model; handlers/ joins the two.
package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Metadata keys the Subscriber adds to every message. The prefix
// "_notifybridge_" is reserved: a producer's entry field with that prefix is
// overwritten on ingest and left out of dead letters.
const (
	MetadataPrefix = "_notifybridge_"
	// MetadataEntryID is the stream entry id, <ms>-<seq> (also the message UUID).
	MetadataEntryID = MetadataPrefix + "entry_id"
	// MetadataEntryTime is the millisecond part of the entry id, in decimal.
	MetadataEntryTime = MetadataPrefix + "entry_time"
)

// Hooks receive ingest metrics. Implementations must be cheap and safe for
// concurrent use; the package imports no metrics library itself.
type Hooks interface {
	// EntriesRead is called once per non-empty XREADGROUP reply with its
	// entry count (also the batch size), pending re-reads included.
	EntriesRead(n int)
	// AcksFlushed is called after each successful XACK with the ids it carried.
	AcksFlushed(n int)
	// RedisError is called for every failed Redis command; op names it
	// ("xreadgroup", "xack", "xgroup create", "xtrim", …).
	RedisError(op string, err error)
}

// NopHooks ignores everything.
type NopHooks struct{}

func (NopHooks) EntriesRead(int)          {}
func (NopHooks) AcksFlushed(int)          {}
func (NopHooks) RedisError(string, error) {}

// Config configures a Subscriber. Zero values take the defaults below.
type Config struct {
	// Stream is the stream key; Subscribe accepts only this topic.
	Stream string
	// Group is the consumer group, notifybridge-<node_id>.
	Group string
	// Consumer is the one consumer of the group, the node_id.
	Consumer string

	// BatchSize is XREADGROUP COUNT. Default 256.
	BatchSize int
	// Block is XREADGROUP BLOCK when no entry is waiting. Default 1s: it costs
	// one command per second when idle and bounds how long Close waits for an
	// in-flight read (go-redis does not abort a blocked read on cancel).
	Block time.Duration
	// AckBatch flushes the pending acks once this many are waiting. Default 256.
	AckBatch int
	// AckInterval flushes pending acks at most this long after the first of
	// them. Default 10ms: short enough that a crash redelivers only a few
	// already-handled entries, long enough that a trickle of events costs at
	// most 100 XACK/s.
	AckInterval time.Duration
	// NackBackoff is the first delay before a nacked message is sent again;
	// it doubles up to NackBackoffMax. Defaults 10ms and 1s.
	NackBackoff    time.Duration
	NackBackoffMax time.Duration
	// RetryBackoffMax caps the backoff after Redis errors (connection lost,
	// server restarting). It starts at 50ms. Default 5s.
	RetryBackoffMax time.Duration
	// CloseTimeout is how long Close lets the in-flight message finish (ack or
	// nack) and the final XACK run. Default 5s.
	CloseTimeout time.Duration

	// StartID names the id at which a missing group is created (XGROUP CREATE
	// … <id> MKSTREAM): entries after it are read. It must not return "$",
	// which would lose entries added between a warm start and the group.
	// An existing group keeps its position and StartID is not called.
	// Default: the stream's newest entry, or 0-0 for an empty stream.
	StartID func(ctx context.Context) (string, error)
	// OnGroupRecreated is called (from the reading goroutine) after NOGROUP at
	// run time made the Subscriber recreate the group at StartID, that is
	// when Redis lost the group. Optional.
	OnGroupRecreated func()

	Logger *zap.Logger
	Hooks  Hooks
}

func (c *Config) setDefaults() {
	if c.BatchSize == 0 {
		c.BatchSize = 256
	}
	if c.Block == 0 {
		c.Block = time.Second
	}
	if c.AckBatch == 0 {
		c.AckBatch = 256
	}
	if c.AckInterval == 0 {
		c.AckInterval = 10 * time.Millisecond
	}
	if c.NackBackoff == 0 {
		c.NackBackoff = 10 * time.Millisecond
	}
	if c.NackBackoffMax == 0 {
		c.NackBackoffMax = time.Second
	}
	if c.RetryBackoffMax == 0 {
		c.RetryBackoffMax = 5 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Hooks == nil {
		c.Hooks = NopHooks{}
	}
}

// Validate reports the first bad setting, named as in the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Stream == "" {
		errs = append(errs, errors.New("stream: must not be empty"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("group: must not be empty"))
	}
	if c.Consumer == "" {
		errs = append(errs, errors.New("consumer: must not be empty"))
	}
	positive := []struct {
		name string
		ok   bool
		val  any
	}{
		{"ingest_batch_size", c.BatchSize > 0, c.BatchSize},
		{"ingest_block", c.Block >= time.Millisecond, c.Block},
		{"ingest_ack_batch", c.AckBatch > 0, c.AckBatch},
		{"ingest_ack_interval", c.AckInterval > 0, c.AckInterval},
		{"nack_backoff", c.NackBackoff > 0 && c.NackBackoff <= c.NackBackoffMax, c.NackBackoff},
		{"retry_backoff_max", c.RetryBackoffMax > 0, c.RetryBackoffMax},
		{"close_timeout", c.CloseTimeout > 0, c.CloseTimeout},
	}
	for _, p := range positive {
		if !p.ok {
			errs = append(errs, fmt.Errorf("%s: must be > 0, got %v", p.name, p.val))
		}
	}
	return errors.Join(errs...)
}
