package node

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/internal/backoff"
)

// Redis is the node's Redis: an external server from redis_url, or an
// embedded in-memory one for zero-setup runs. The publish and dead
// subcommands open it too.
type Redis struct {
	Client   redis.UniversalClient
	URL      string // redacted form, safe to log
	embedded *miniredis.Miniredis
}

// OpenRedis makes the client redis_url names (no command is sent yet), or
// starts the embedded Redis when redis_url is empty.
func OpenRedis(cfg *config.Config) (*Redis, error) {
	if cfg.Embedded() {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("embedded redis: %w", err)
		}
		url := "redis://" + m.Addr()
		return &Redis{Client: redis.NewClient(&redis.Options{Addr: m.Addr()}), URL: url, embedded: m}, nil
	}
	p, err := config.ParseRedisURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("redis_url: %w", err)
	}
	// Reads block up to ingest_block; the client's read timeout must outlast it.
	readTimeout := cfg.IngestBlock.Duration + 5*time.Second
	var c redis.UniversalClient
	switch p.Kind {
	case config.RedisSentinel:
		// The failover client asks the sentinels for the master and follows
		// a failover: its connections to the old master are dropped and the
		// next command goes to the new one, so ingest resumes by itself.
		p.Failover.ReadTimeout, p.Failover.ContextTimeoutEnabled = readTimeout, true
		p.Failover.ConnMaxIdleTime = idleConnMax(p.Failover.ConnMaxIdleTime)
		c = redis.NewFailoverClient(p.Failover)
	case config.RedisCluster:
		// One stream lives on one shard; the cluster client routes every
		// command by key (and follows MOVED after a resharding or failover).
		p.Cluster.ReadTimeout, p.Cluster.ContextTimeoutEnabled = readTimeout, true
		p.Cluster.ConnMaxIdleTime = idleConnMax(p.Cluster.ConnMaxIdleTime)
		c = redis.NewClusterClient(p.Cluster)
	default:
		p.Single.ReadTimeout, p.Single.ContextTimeoutEnabled = readTimeout, true
		p.Single.ConnMaxIdleTime = idleConnMax(p.Single.ConnMaxIdleTime)
		c = redis.NewClient(p.Single)
	}
	return &Redis{Client: c, URL: config.RedactURL(cfg.RedisURL)}, nil
}

// defaultConnMaxIdle bounds how long a pooled connection may sit idle and
// still be reused. After a partition that the network forgot (a NAT or
// firewall lost the flows' state and drops their packets without a RST),
// every connection idle across it is dead, yet looks healthy to the pool;
// go-redis's default of 30 minutes hands them out one by one, each costing
// a full timeout (1 s for a readiness probe, read_timeout for ingest), so
// the node relapsed to not-ready and stalled ingest well after the heal.
// No connection can go idle during an outage without its last command
// having failed (which discards it), so any outage longer than this leaves
// none behind. The node's busy connections are reused every second or so
// (probe, blocking read), so the cost is the odd redial of a quiet one.
const defaultConnMaxIdle = 5 * time.Second

// idleConnMax keeps a conn_max_idle_time given in redis_url, else applies
// defaultConnMaxIdle.
func idleConnMax(fromURL time.Duration) time.Duration {
	if fromURL != 0 {
		return fromURL
	}
	return defaultConnMaxIdle
}

// Close closes the client and stops the embedded Redis.
func (r *Redis) Close() {
	_ = r.Client.Close()
	if r.embedded != nil {
		r.embedded.Close()
	}
}

// waitForRedis pings with capped exponential backoff until Redis answers or
// ctx ends, logging each failure so a node that cannot start says why.
func waitForRedis(ctx context.Context, c redis.UniversalClient, maxBackoff time.Duration, log *zap.Logger) error {
	retry := backoff.New(100*time.Millisecond, maxBackoff)
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		log.Warn("redis not reachable, retrying", zap.Int("attempt", attempt), zap.Duration("backoff", retry.Peek()), zap.Error(err))
		if !retry.Wait(ctx) {
			return ctx.Err()
		}
	}
}
