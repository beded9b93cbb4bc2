// Package streams reads and writes Redis Streams for notifybridge: a Watermill
// Subscriber over one consumer group, a Reader for ranges and stream info, the
// dead-letter writer and the retention Trimmer. It knows nothing of the bridge
// event model; handlers/ joins the two.
package streams

import (
	"cmp"
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

// Defaults of Config. Where a field is a node setting, its default is that
// setting's documented default (README, contract §4), so a library user who
// leaves a field zero gets the number an operator reads about; config/ holds
// those and TestDefaultsAreTheSettings pins the two together.
const (
	DefaultBatchSize       = 256                   // ingest_batch
	DefaultBlock           = 2 * time.Second       // ingest_block
	DefaultAckBatch        = DefaultBatchSize      // the node passes ingest_batch
	DefaultAckInterval     = 20 * time.Millisecond // ack_interval
	DefaultRetryBackoffMax = 5 * time.Second       // redis_retry_backoff
	DefaultCloseTimeout    = 10 * time.Second      // shutdown_timeout
	DefaultNackBackoff     = 10 * time.Millisecond // no setting
	DefaultNackBackoffMax  = time.Second           // no setting

	// redisRetryMin is the first wait after a failed Redis command.
	redisRetryMin = 50 * time.Millisecond
)

// Config configures a Subscriber. Zero values take the defaults above.
type Config struct {
	// Stream is the stream key; Subscribe accepts only this topic.
	Stream string
	// Group is the consumer group, notifybridge-<node_id> (config.GroupPrefix).
	Group string
	// Consumer is the one consumer of the group, the node_id.
	Consumer string

	// BatchSize is XREADGROUP COUNT (ingest_batch).
	BatchSize int
	// Batched sends each read batch as one message whose entries Entries
	// returns, instead of one message per entry. The handler then settles the
	// entries in order itself and the message's Ack acknowledges them all:
	// one hand-off through the Router per XREADGROUP reply rather than per
	// entry, which is what lets a node keep up at tens of thousands of
	// entries a second. Off by default, so the Subscriber behaves as any
	// Watermill Subscriber (one message per entry, fields as metadata).
	Batched bool
	// Block is XREADGROUP BLOCK when no entry is waiting (ingest_block). It
	// costs one command per Block when idle and bounds how long Close waits
	// for an in-flight read (go-redis does not abort a blocked read on cancel).
	Block time.Duration
	// AckBatch flushes the pending acks once this many are waiting.
	AckBatch int
	// AckInterval flushes pending acks at most this long after the first of
	// them (ack_interval): short enough that a crash redelivers only a few
	// already-handled entries, long enough that a trickle of events costs at
	// most 50 XACK/s.
	AckInterval time.Duration
	// NackBackoff is the first delay before a nacked message is sent again;
	// it doubles up to NackBackoffMax.
	NackBackoff    time.Duration
	NackBackoffMax time.Duration
	// RetryBackoffMax caps the backoff after Redis errors (connection lost,
	// server restarting); it starts at 50ms (redis_retry_backoff).
	RetryBackoffMax time.Duration
	// CloseTimeout is how long Close lets the in-flight message finish (ack or
	// nack) and the final XACK run (shutdown_timeout).
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
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.Block = cmp.Or(c.Block, DefaultBlock)
	c.AckBatch = cmp.Or(c.AckBatch, DefaultAckBatch)
	c.AckInterval = cmp.Or(c.AckInterval, DefaultAckInterval)
	c.NackBackoff = cmp.Or(c.NackBackoff, DefaultNackBackoff)
	c.NackBackoffMax = cmp.Or(c.NackBackoffMax, DefaultNackBackoffMax)
	c.RetryBackoffMax = cmp.Or(c.RetryBackoffMax, DefaultRetryBackoffMax)
	c.CloseTimeout = cmp.Or(c.CloseTimeout, DefaultCloseTimeout)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Hooks == nil {
		c.Hooks = NopHooks{}
	}
}

// Validate reports every bad setting, joined with errors.Join, each named
// as the node's setting when it is one (ingest_batch, ack_interval, …) and
// as the field in snake case otherwise (ack_batch).
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
	checks := []struct {
		name string
		ok   bool
		want string
		val  any
	}{
		{"ingest_batch", c.BatchSize > 0, "> 0", c.BatchSize},
		{"ingest_block", c.Block >= time.Millisecond, ">= 1ms", c.Block},
		{"ack_batch", c.AckBatch > 0, "> 0", c.AckBatch},
		{"ack_interval", c.AckInterval > 0, "> 0", c.AckInterval},
		{"nack_backoff", c.NackBackoff > 0, "> 0", c.NackBackoff},
		{"nack_backoff_max", c.NackBackoffMax >= c.NackBackoff, ">= nack_backoff", c.NackBackoffMax},
		{"redis_retry_backoff", c.RetryBackoffMax > 0, "> 0", c.RetryBackoffMax},
		{"shutdown_timeout", c.CloseTimeout > 0, "> 0", c.CloseTimeout},
	}
	for _, p := range checks {
		if !p.ok {
			errs = append(errs, fmt.Errorf("%s: must be %s, got %v", p.name, p.want, p.val))
		}
	}
	return errors.Join(errs...)
}
