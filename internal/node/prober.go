package node

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
	c     redis.UniversalClient
	ready *Readiness
	tel   *telemetry
	cfg   *config.Config
	log   *zap.Logger
	stop  chan struct{}
	wg    sync.WaitGroup
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

func startProber(c redis.UniversalClient, ready *Readiness, tel *telemetry, cfg *config.Config, log *zap.Logger) *prober {
	p := &prober{c: c, ready: ready, tel: tel, cfg: cfg, log: log, stop: make(chan struct{})}
	p.wg.Add(1)
	go p.run()
	return p
}

func (p *prober) run() {
	defer p.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastExpiry := time.Now()
	// The node only starts probing once Redis answered (waitForRedis).
	health := redisHealth{grace: p.cfg.ReadinessGrace.Duration, lastOK: time.Now()}
	graceLogged := false
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		sent := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := p.c.Ping(ctx).Err()
		ok := health.observe(sent, time.Now(), err)
		switch {
		case p.ready.setRedis(ok):
			if !ok {
				p.log.Warn("redis stopped answering: not ready", zap.Error(err), zap.Duration("readiness_grace", health.grace))
			} else {
				p.log.Info("redis answers again: ready")
			}
			graceLogged = false
		case ok && err != nil && !graceLogged:
			p.log.Warn("redis did not answer; still ready within readiness_grace", zap.Error(err), zap.Duration("readiness_grace", health.grace))
			graceLogged = true
		case err == nil && graceLogged:
			p.log.Info("redis answers again (within readiness_grace)")
			graceLogged = false
		}
		if err == nil {
			if g, found, gerr := streams.ReadGroupLag(ctx, p.c, p.cfg.Stream, p.cfg.Group()); gerr == nil && found {
				p.tel.setGroup(g)
			}
		}
		cancel()
		if err == nil && p.cfg.GroupTTL.Duration > 0 && time.Since(lastExpiry) >= time.Minute {
			lastExpiry = time.Now()
			p.expireGroups()
		}
	}
}

func (p *prober) expireGroups() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	deleted, err := streams.ExpireGroups(ctx, p.c, p.cfg.Stream, config.GroupPrefix, p.cfg.Group(), p.cfg.GroupTTL.Duration)
	for _, g := range deleted {
		p.log.Info("deleted the consumer group of a retired node", zap.String("group", g), zap.Duration("group_ttl", p.cfg.GroupTTL.Duration))
	}
	if err != nil {
		p.log.Warn("expiring old consumer groups", zap.Error(err))
	}
}

func (p *prober) Close() {
	close(p.stop)
	p.wg.Wait()
}
