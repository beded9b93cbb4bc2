// Package publisher appends events to the notifybridge stream by contract §1.
// It is the one Go package for producers: the CLI's publish subcommand and the
// tests use it. It validates with the bridge's own rules, so an event it
// accepts is never dead-lettered by the bridge with the same limits.
package publisher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/redis/go-redis/v9"
)

// Publisher appends plain entries (fields to, type, data) to one stream. It is
// safe for concurrent use.
type Publisher struct {
	client redis.UniversalClient
	stream string
	lim    bridge.Limits
	// MaxLen, when > 0, trims the stream with XADD … MAXLEN ~ MaxLen on every
	// append (producers may bound the stream themselves; the bridge also
	// applies its retention).
	MaxLen int64
	// WaitReplicas, when > 0, makes each append wait (WAIT) until that many
	// replicas hold it, up to WaitTimeout (default 1 s): an entry only the
	// primary holds is lost if a replica is promoted before it arrived
	// (docs/reliability.md). WAIT counts the writes of its own connection, so
	// it rides in one pipeline with the XADD.
	WaitReplicas int
	WaitTimeout  time.Duration
}

// NotReplicatedError is an append that Redis took but fewer than
// WaitReplicas replicas acknowledged in time. The entry exists (ID) and is
// delivered unless the primary fails before it reaches a replica; a producer
// that must not lose it alerts, or appends again only if it can tolerate a
// duplicate event.
type NotReplicatedError struct {
	ID       string
	Replicas int64
	Want     int
}

func (e *NotReplicatedError) Error() string {
	return fmt.Sprintf("publisher: entry %s reached %d of %d replicas in time", e.ID, e.Replicas, e.Want)
}

// New returns a Publisher for stream that checks entries against lim (use
// bridge.DefaultLimits unless the bridge runs with other limits).
func New(client redis.UniversalClient, stream string, lim bridge.Limits) *Publisher {
	return &Publisher{client: client, stream: stream, lim: lim}
}

// Publish is p.Publish for data held as a string or a []byte.
func Publish[D string | []byte](ctx context.Context, p *Publisher, to, typ string, data D) (string, error) {
	return p.Publish(ctx, to, typ, string(data))
}

// Publish validates the event and appends it; it returns the new entry id.
// typ "" means the default type, notification. A rule broken is returned as
// a *bridge.BadEntryError (errors.Is(err, bridge.ErrBadEntry)) and nothing is
// written.
func (p *Publisher) Publish(ctx context.Context, to, typ, data string) (string, error) {
	if p.stream == "" {
		return "", errors.New("publisher: stream is empty")
	}
	// NewEvent holds every rule; building the frame it returns is the price
	// of not restating them here.
	if _, err := bridge.NewEvent(bridge.ID{}, typ, to, data, p.lim); err != nil {
		return "", err
	}
	values := []any{"to", to, "data", data}
	if typ != "" {
		values = append(values, "type", typ)
	}
	args := &redis.XAddArgs{Stream: p.stream, Values: values}
	if p.MaxLen > 0 {
		args.MaxLen, args.Approx = p.MaxLen, true
	}
	if p.WaitReplicas <= 0 {
		return p.client.XAdd(ctx, args).Result()
	}
	return p.addAndWait(ctx, args)
}

func (p *Publisher) addAndWait(ctx context.Context, args *redis.XAddArgs) (string, error) {
	var c redis.Cmdable = p.client
	if cc, ok := p.client.(*redis.ClusterClient); ok {
		// WAIT has no key: send both to the stream's shard.
		m, err := cc.MasterForKey(ctx, p.stream)
		if err != nil {
			return "", err
		}
		c = m
	}
	timeout := p.WaitTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	pipe := c.Pipeline()
	add := pipe.XAdd(ctx, args)
	wait := pipe.Do(ctx, "WAIT", p.WaitReplicas, timeout.Milliseconds())
	_, _ = pipe.Exec(ctx)
	id, err := add.Result()
	if err != nil {
		return "", err
	}
	n, err := wait.Int64()
	if err != nil {
		return id, fmt.Errorf("publisher: WAIT after %s: %w", id, err)
	}
	if n < int64(p.WaitReplicas) {
		return id, &NotReplicatedError{ID: id, Replicas: n, Want: p.WaitReplicas}
	}
	return id, nil
}
