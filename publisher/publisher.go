// Package publisher appends events to the notifybridge stream by contract §1.
// It is the one Go package for producers: the CLI's publish subcommand and the
// tests use it. It validates with the bridge's own rules, so an event it
// accepts is never dead-lettered by the bridge with the same limits.
package publisher

import (
	"context"
	"errors"

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
	return p.client.XAdd(ctx, args).Result()
}
