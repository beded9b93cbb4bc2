// Package backoff is the one capped exponential backoff and context-aware
// sleep behind every retry loop of ours: Redis reconnects, the ingest read
// and ack loops, nack redelivery, handler retries, warm start.
package backoff

import (
	"context"
	"time"
)

// Sleep waits d or until ctx ends; it reports whether ctx is still live. A
// d of zero or less returns at once.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Backoff doubles a wait from min up to max. It is owned by one retry loop
// and not safe for concurrent use.
type Backoff struct{ min, max, cur time.Duration }

// New starts at min; each Next doubles the wait, capped at max.
func New(min, max time.Duration) *Backoff { return &Backoff{min: min, max: max, cur: min} }

// Peek is the wait Next will return, for a log line before the wait.
func (b *Backoff) Peek() time.Duration { return b.cur }

// Next returns the current wait and doubles the following one, up to max.
func (b *Backoff) Next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	return d
}

// Reset starts over at min, after a success.
func (b *Backoff) Reset() { b.cur = b.min }

// Wait sleeps Next() or until ctx ends; it reports whether ctx is still live.
func (b *Backoff) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }
