package bridge

import (
	"cmp"
	"errors"
	"time"

	"go.uber.org/zap"
)

// Config tunes a Hub. NewHub fills zero fields with defaults and validates.
type Config struct {
	// WindowBytes bounds the replay window: event frames plus index (setting
	// replay_window, default 64 MiB).
	WindowBytes int64
	// CursorInterval is the silence after which a connection is sent a cursor
	// frame (cursor_interval, default 30 s).
	CursorInterval time.Duration
	// BackfillPage is the XRANGE page size of resumes older than the window
	// (backfill_page, default 2048 entries).
	BackfillPage int
	// BackfillBytes bounds the shared cache of backfill pages (backfill_cache,
	// default 16 MiB); see docs/design.md for what pages in use add.
	BackfillBytes int64
	// BackfillWorkers bounds concurrent backfill reads (backfill_workers,
	// default 4).
	BackfillWorkers int
	// Logger receives the Hub's logs; nil means zap.NewNop().
	Logger *zap.Logger
	// Hooks receive the Hub's observations; nil means none.
	Hooks Hooks
}

// Defaults of Config. WindowBytes and CursorInterval default to their
// settings' documented defaults (README, contract §4), which config/ holds;
// TestDefaultsAreTheSettings pins the two together. The backfill knobs have
// no setting: their defaults live here only.
const (
	DefaultWindowBytes     = 64 << 20
	DefaultCursorInterval  = 30 * time.Second
	DefaultBackfillPage    = 2048
	DefaultBackfillBytes   = 16 << 20
	DefaultBackfillWorkers = 4
)

func (c *Config) setDefaults() {
	c.WindowBytes = cmp.Or(c.WindowBytes, DefaultWindowBytes)
	c.CursorInterval = cmp.Or(c.CursorInterval, DefaultCursorInterval)
	c.BackfillPage = cmp.Or(c.BackfillPage, DefaultBackfillPage)
	c.BackfillBytes = cmp.Or(c.BackfillBytes, DefaultBackfillBytes)
	c.BackfillWorkers = cmp.Or(c.BackfillWorkers, DefaultBackfillWorkers)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Hooks == nil {
		c.Hooks = NopHooks{}
	}
}

// Validate reports every bad setting, joined with errors.Join, each named as
// users write it (replay_window: must be > 0).
func (c *Config) Validate() error {
	var errs []error
	if c.WindowBytes <= 0 {
		errs = append(errs, errors.New("replay_window: must be > 0"))
	}
	if c.CursorInterval <= 0 {
		errs = append(errs, errors.New("cursor_interval: must be > 0"))
	}
	if c.BackfillPage <= 0 {
		errs = append(errs, errors.New("backfill_page: must be > 0"))
	}
	if c.BackfillBytes <= 0 {
		errs = append(errs, errors.New("backfill_cache: must be > 0"))
	}
	if c.BackfillWorkers <= 0 {
		errs = append(errs, errors.New("backfill_workers: must be > 0"))
	}
	return errors.Join(errs...)
}

// ResumeSource says where a new connection's replay comes from.
type ResumeSource uint8

const (
	ResumeFromLive   ResumeSource = iota + 1 // no resume parameter
	ResumeFromWindow                         // inside the replay window: no Redis read
	ResumeFromStore                          // older than the window: paged from Redis
)

func (s ResumeSource) String() string {
	switch s {
	case ResumeFromLive:
		return "live"
	case ResumeFromWindow:
		return "window"
	case ResumeFromStore:
		return "redis"
	}
	return "unknown"
}

// Hooks receive the Hub's observations; the operations layer turns them into
// metrics. Every method must be cheap, non-blocking and safe for concurrent
// use; several are called under the window lock.
type Hooks interface {
	// Appended counts an event entering the window.
	Appended()
	// Evicted counts events leaving the window from its old end.
	Evicted(n int)
	// WindowSize reports the window after a change.
	WindowSize(events int, bytes int64)
	// Resumed counts a new connection by where its replay comes from.
	Resumed(from ResumeSource)
	// BackfillRead counts a page read from Redis for resumes (shared).
	BackfillRead(entries int)
	// Gap counts a gap frame sent.
	Gap()
	// RedisLostData counts the times this node saw Redis lose entries it had
	// read (a restart without persistence, a failover to a replica behind).
	RedisLostData()
	// SlowClosed counts a connection closed with 1013; cause is a fixed word.
	SlowClosed(cause string)
	// Lag observes, for the first live event of a pull (sampled: one live
	// pull in 16 per connection), how far its id time lies behind the wall
	// clock.
	Lag(d time.Duration)
}

// NopHooks observes nothing.
type NopHooks struct{}

func (NopHooks) Appended()             {}
func (NopHooks) Evicted(int)           {}
func (NopHooks) WindowSize(int, int64) {}
func (NopHooks) Resumed(ResumeSource)  {}
func (NopHooks) BackfillRead(int)      {}
func (NopHooks) Gap()                  {}
func (NopHooks) RedisLostData()        {}
func (NopHooks) SlowClosed(string)     {}
func (NopHooks) Lag(time.Duration)     {}
