package main

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/transport/streams"
)

// prober keeps readiness honest about Redis and polls the consumer group's
// lag and pending counts for the metrics, once a second; once a minute it
// deletes the groups of retired node ids (group_ttl).
type prober struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

// redisHealth turns probe results into "Redis answers" for readiness: a
// failed probe counts only once Redis has gone unanswered for longer than
// grace (readiness_grace), so a stall shorter than that (a fork, a slow
// command, DEBUG SLEEP) does not flap every node at once. Owned by the
// prober goroutine.
type redisHealth struct {
	grace  time.Duration
	lastOK time.Time // when the last probe that Redis answered was sent
}

// observe records a probe sent at sent that ended at now with err, and
// reports whether Redis counts as answering.
func (h *redisHealth) observe(sent, now time.Time, err error) bool {
	if err == nil {
		h.lastOK = sent
		return true
	}
	return now.Sub(h.lastOK) < h.grace
}

func startProber(c redis.UniversalClient, ready *readiness, tel *telemetry, cfg *config.Config, log *zap.Logger) *prober {
	p := &prober{stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		lastExpiry := time.Now()
		// The node only starts probing once Redis answered (waitForRedis).
		health := redisHealth{grace: cfg.ReadinessGrace.Duration, lastOK: time.Now()}
		graceLogged := false
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			sent := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := c.Ping(ctx).Err()
			ok := health.observe(sent, time.Now(), err)
			if was := ready.redisOK.Swap(ok); was != ok {
				if !ok {
					log.Warn("redis stopped answering: not ready", zap.Error(err), zap.Duration("readiness_grace", health.grace))
				} else {
					log.Info("redis answers again: ready")
				}
				graceLogged = false
			} else if ok && err != nil && !graceLogged {
				log.Warn("redis did not answer; still ready within readiness_grace", zap.Error(err), zap.Duration("readiness_grace", health.grace))
				graceLogged = true
			} else if err == nil && graceLogged {
				log.Info("redis answers again (within readiness_grace)")
				graceLogged = false
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
			if err == nil && cfg.GroupTTL.Duration > 0 && time.Since(lastExpiry) >= time.Minute {
				lastExpiry = time.Now()
				expireGroups(c, cfg, log)
			}
		}
	}()
	return p
}

func expireGroups(c redis.UniversalClient, cfg *config.Config, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	deleted, err := streams.ExpireGroups(ctx, c, cfg.Stream, "notifybridge-", cfg.Group(), cfg.GroupTTL.Duration)
	for _, g := range deleted {
		log.Info("deleted the consumer group of a retired node", zap.String("group", g), zap.Duration("group_ttl", cfg.GroupTTL.Duration))
	}
	if err != nil {
		log.Warn("expiring old consumer groups", zap.Error(err))
	}
}

func (p *prober) Close() {
	close(p.stop)
	p.wg.Wait()
}
