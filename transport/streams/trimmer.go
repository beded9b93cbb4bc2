package streams

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// TrimmerConfig sets the stream's retention: exactly one of MaxAge and MaxLen.
type TrimmerConfig struct {
	Stream string
	// MaxAge trims entries older than this (XTRIM MINID ~ <now-MaxAge>).
	MaxAge time.Duration
	// MaxLen keeps about this many entries (XTRIM MAXLEN ~ MaxLen).
	MaxLen int64
	// Interval between trims. Default 1 minute (or MaxAge/10 if smaller):
	// "~" trimming is cheap, and the stream may exceed its retention by
	// about one interval.
	Interval time.Duration
	Logger   *zap.Logger
	Hooks    Hooks
	// Now is the clock; default Redis's own (TIME), the clock its entry ids
	// come from, so a node whose clock jumps trims by the ids' time, not
	// its own. For tests.
	Now func() time.Time
}

func (c *TrimmerConfig) setDefaults() {
	if c.Interval == 0 {
		c.Interval = time.Minute
		if c.MaxAge > 0 && c.MaxAge/10 < c.Interval {
			c.Interval = max(c.MaxAge/10, time.Second)
		}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Hooks == nil {
		c.Hooks = NopHooks{}
	}
}

// Validate reports bad settings, named as in the configuration.
func (c *TrimmerConfig) Validate() error {
	var errs []error
	if c.Stream == "" {
		errs = append(errs, errors.New("stream: must not be empty"))
	}
	switch {
	case c.MaxAge < 0 || c.MaxLen < 0:
		errs = append(errs, errors.New("retention: must be > 0"))
	case (c.MaxAge > 0) == (c.MaxLen > 0):
		errs = append(errs, errors.New("retention: set either a duration or an entry count"))
	}
	if c.Interval <= 0 {
		errs = append(errs, errors.New("retention_interval: must be > 0"))
	}
	return errors.Join(errs...)
}

// Trimmer applies retention periodically from its own goroutine, started by
// NewTrimmer and stopped by Close, which waits for it.
type Trimmer struct {
	client redis.UniversalClient
	cfg    TrimmerConfig
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// NewTrimmer validates cfg, trims once right away and then every Interval.
func NewTrimmer(client redis.UniversalClient, cfg TrimmerConfig) (*Trimmer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Trimmer{client: client, cfg: cfg, cancel: cancel, done: make(chan struct{})}
	go t.run(ctx)
	return t, nil
}

func (t *Trimmer) run(ctx context.Context) {
	defer close(t.done)
	tick := time.NewTicker(t.cfg.Interval)
	defer tick.Stop()
	for {
		if _, err := t.TrimOnce(ctx); err != nil && ctx.Err() == nil {
			t.cfg.Logger.Warn("trimming the stream failed; will retry", zap.Error(err))
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// TrimOnce applies the retention now and returns how many entries went.
func (t *Trimmer) TrimOnce(ctx context.Context) (int64, error) {
	var cmd *redis.IntCmd
	if t.cfg.MaxLen > 0 {
		cmd = t.client.XTrimMaxLenApprox(ctx, t.cfg.Stream, t.cfg.MaxLen, 0)
	} else {
		now, err := t.now(ctx)
		if err != nil {
			t.cfg.Hooks.RedisError("time", err)
			return 0, err
		}
		minMs := now.Add(-t.cfg.MaxAge).UnixMilli()
		if minMs <= 0 {
			return 0, nil
		}
		cmd = t.client.XTrimMinIDApprox(ctx, t.cfg.Stream, strconv.FormatInt(minMs, 10)+"-0", 0)
	}
	n, err := cmd.Result()
	if err != nil {
		t.cfg.Hooks.RedisError("xtrim", err)
	}
	return n, err
}

func (t *Trimmer) now(ctx context.Context) (time.Time, error) {
	if t.cfg.Now != nil {
		return t.cfg.Now(), nil
	}
	return t.client.Time(ctx).Result()
}

// Close stops the trimmer and waits for its goroutine.
func (t *Trimmer) Close() error {
	t.once.Do(t.cancel)
	<-t.done
	return nil
}
