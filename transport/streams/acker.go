package streams

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/internal/backoff"
)

// acker batches acknowledged ids and sends them with one XACK per batch. The
// consumer goroutine adds ids; the acker's own goroutine flushes them, so the
// consumer never waits for an XACK round trip.
type acker struct {
	client redis.UniversalClient
	cfg    *Config

	mu    sync.Mutex // guards ids
	ids   []string
	spare []string // the other buffer, owned by the flushing goroutine

	kick chan struct{} // cap 1: the batch became non-empty or full
	done chan struct{} // closed by stop: final flush, then exit
}

func newAcker(client redis.UniversalClient, cfg *Config) *acker {
	return &acker{
		client: client,
		cfg:    cfg,
		ids:    make([]string, 0, cfg.AckBatch),
		spare:  make([]string, 0, cfg.AckBatch),
		kick:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
}

// add queues id for the next XACK. It never blocks on Redis.
func (a *acker) add(id string) {
	a.mu.Lock()
	a.ids = append(a.ids, id)
	n := len(a.ids)
	a.mu.Unlock()
	if n == 1 || n >= a.cfg.AckBatch {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// addEntries queues the ids of entries, in order, like add for each.
func (a *acker) addEntries(entries []Entry) {
	a.mu.Lock()
	was := len(a.ids)
	for i := range entries {
		a.ids = append(a.ids, entries[i].ID)
	}
	n := len(a.ids)
	a.mu.Unlock()
	if was == 0 || n >= a.cfg.AckBatch {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// stop makes run flush what is left and return. Called once, after the last add.
func (a *acker) stop() { close(a.done) }

func (a *acker) run() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	retry := backoff.New(redisRetryMin, a.cfg.RetryBackoffMax)
	for {
		select {
		case <-a.kick:
		case <-a.done:
			a.finalFlush()
			return
		}
		// Something is waiting: give the batch AckInterval to fill up unless
		// it is full already.
		if !a.full() {
			timer.Reset(a.cfg.AckInterval)
			select {
			case <-timer.C:
			case <-a.kick:
				timer.Stop()
			case <-a.done:
				timer.Stop()
				a.finalFlush()
				return
			}
		}
		for {
			err := a.flush(context.Background())
			if err == nil {
				retry.Reset()
				break
			}
			// The ids are kept; retry after a pause (Redis restarting).
			a.cfg.Logger.Warn("acknowledging entries failed; retrying", zap.Error(err), zap.Duration("backoff", retry.Peek()))
			timer.Reset(retry.Next())
			select {
			case <-timer.C:
			case <-a.done:
				timer.Stop()
				a.finalFlush()
				return
			}
		}
	}
}

func (a *acker) full() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids) >= a.cfg.AckBatch
}

// finalFlush tries to send what is left within CloseTimeout. What it cannot
// send stays pending in Redis and is re-read (and deduplicated by the core)
// on the next start.
func (a *acker) finalFlush() {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.CloseTimeout)
	defer cancel()
	for {
		err := a.flush(ctx)
		if err == nil {
			return
		}
		if !backoff.Sleep(ctx, redisRetryMin) {
			a.mu.Lock()
			n := len(a.ids)
			a.mu.Unlock()
			a.cfg.Logger.Warn("could not acknowledge entries before close; they stay pending", zap.Int("entries", n), zap.Error(err))
			return
		}
	}
}

// flush sends everything queued, in chunks of AckBatch ids. On error the
// unsent ids go back to the front of the queue.
func (a *acker) flush(ctx context.Context) error {
	a.mu.Lock()
	batch := a.ids
	a.ids = a.spare[:0]
	a.mu.Unlock()
	ids := batch
	for len(ids) > 0 {
		n := min(len(ids), a.cfg.AckBatch)
		err := a.client.XAck(ctx, a.cfg.Stream, a.cfg.Group, ids[:n]...).Err()
		if err != nil {
			a.cfg.Hooks.RedisError("xack", err)
			a.mu.Lock()
			// Re-acking an id is harmless (XACK returns 0 for it), losing one
			// is not: keep them in order ahead of the newer ones.
			a.ids = append(ids, a.ids...)
			a.mu.Unlock()
			return err
		}
		a.cfg.Hooks.AcksFlushed(n)
		ids = ids[n:]
	}
	a.mu.Lock()
	a.spare = batch[:0]
	a.mu.Unlock()
	return nil
}
