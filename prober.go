package main

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/config"
)

// prober keeps readiness honest about Redis and polls the consumer group's
// lag and pending counts for the metrics, once a second.
type prober struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

func startProber(c redis.UniversalClient, ready *readiness, tel *telemetry, cfg *config.Config, log *zap.Logger) *prober {
	p := &prober{stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := c.Ping(ctx).Err()
			if was := ready.redisOK.Swap(err == nil); was != (err == nil) {
				if err != nil {
					log.Warn("redis stopped answering: not ready", zap.Error(err))
				} else {
					log.Info("redis answers again: ready")
				}
			}
			if ready.Check() == nil {
				tel.ready.Set(1)
			} else {
				tel.ready.Set(0)
			}
			if err == nil {
				if groups, gerr := c.XInfoGroups(ctx, cfg.Stream).Result(); gerr == nil {
					for _, g := range groups {
						if g.Name == cfg.Group() {
							lag := g.Lag
							if lag < 0 {
								// Redis answers no lag once entries were deleted
								// inside the range the group has not read (XDEL, or
								// trimming past the group). XLEN is then an upper
								// bound, exact when the group is behind the oldest
								// entry; the lag alert still fires for a node far
								// behind instead of seeing -1.
								lag, _ = c.XLen(ctx, cfg.Stream).Result()
							}
							tel.setGroup(lag, g.Pending)
						}
					}
				}
			}
			cancel()
		}
	}()
	return p
}

func (p *prober) Close() {
	close(p.stop)
	p.wg.Wait()
}
