package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/handlers"
	"github.com/notifybridge/notifybridge/internal/backoff"
	"github.com/notifybridge/notifybridge/transport/streams"
)

// A node whose group is behind its stream would read, through the router,
// every entry warm start just read (the window holds them, so Append drops
// them) and every older one the window could not hold (dropped as well).
// Instead the group is moved to the warmed head before ingest starts: ingest
// is live at once and reads each entry once. What the skipped entries still
// owe is a dead letter for each one that does not decode: warm start
// reports those it read, and a sweep reads the older ones in the background,
// decoding only. The sweep's range is kept in Redis (<stream>:sweeps, one
// field per group) before the group moves and shrinks as it goes, so a
// restart goes on with it: every skipped entry is dead-lettered at least once.

// sweepsSuffix names the hash of unfinished sweeps: <stream>:sweeps.
const sweepsSuffix = ":sweeps"

// skipWarmed moves the group past what warm start covered and returns the
// range still to sweep (from is zero when none). found is false when the
// group does not exist (the subscriber creates it at the head).
func skipWarmed(ctx context.Context, rc *Redis, cfg *config.Config, hub *bridge.Hub, warmBad []handlers.BadEntry,
	dl handlers.DeadLetterWriter, hooks handlers.Hooks, log *zap.Logger) (sweep [2]bridge.ID, err error) {
	key, group := cfg.Stream+sweepsSuffix, cfg.Group()
	// An unfinished sweep of an earlier start is resumed whatever happens now.
	if sweep, err = readSweep(ctx, rc, key, group); err != nil {
		return sweep, err
	}
	pos, found, err := streams.GroupPosition(ctx, rc.Client, cfg.Stream, group)
	if err != nil || !found {
		return sweep, err
	}
	delivered, err := bridge.ParseID(pos)
	if err != nil {
		return sweep, fmt.Errorf("group %s: last-delivered-id %q: %w", group, pos, err)
	}
	head, floor := hub.Head(), hub.WindowFloor()
	if !delivered.Less(head) {
		return sweep, nil
	}
	if delivered.Less(floor) {
		from := delivered
		if !sweep[1].IsZero() && sweep[0].Less(from) {
			from = sweep[0] // the earlier sweep is not done: one range covers both
		}
		sweep = [2]bridge.ID{from, floor}
		if err := rc.Client.HSet(ctx, key, group, sweep[0].String()+" "+sweep[1].String()).Err(); err != nil {
			return sweep, err
		}
	}
	info, err := streams.NewReader(rc.Client, cfg.Stream).Info(ctx)
	if err != nil {
		return sweep, err
	}
	var entriesRead int64
	if info.LastGeneratedID == head.String() {
		entriesRead = info.EntriesAdded
	}
	if err := streams.MoveGroup(ctx, rc.Client, cfg.Stream, group, head.String(), entriesRead); err != nil {
		if isUnsupported(err) {
			// The embedded Redis has no XGROUP SETID: ingest reads it all.
			log.Info("group not moved past the warmed entries", zap.Error(err))
			return [2]bridge.ID{}, rc.Client.HDel(ctx, key, group).Err()
		}
		return sweep, err
	}
	lower := floor
	if floor.Less(delivered) {
		lower = delivered
	}
	for _, e := range warmBad {
		if lower.Less(e.ID) && !head.Less(e.ID) {
			if err := handlers.DeadLetterBad(ctx, dl, hooks, e); err != nil {
				// The group has moved: a dead letter that failed here is
				// lost with it, so say which.
				log.Error("dead letter of a warmed entry failed", zap.String("id", e.ID.String()), zap.Error(err))
			}
		}
	}
	log.Info("group moved past the warmed entries", zap.String("group", group),
		zap.Stringer("from", delivered), zap.Stringer("to", head), zap.Stringer("sweep_from", sweep[0]), zap.Stringer("sweep_to", sweep[1]))
	return sweep, nil
}

func isUnsupported(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "unknown subcommand") || strings.Contains(s, "unknown command") || strings.Contains(s, "syntax error")
}

func readSweep(ctx context.Context, rc *Redis, key, group string) ([2]bridge.ID, error) {
	v, err := rc.Client.HGet(ctx, key, group).Result()
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return [2]bridge.ID{}, nil
		}
		return [2]bridge.ID{}, err
	}
	from, to, ok := strings.Cut(v, " ")
	a, err1 := bridge.ParseID(from)
	b, err2 := bridge.ParseID(to)
	if !ok || err1 != nil || err2 != nil {
		// Not ours or damaged: nothing can be resumed from it.
		return [2]bridge.ID{}, rc.Client.HDel(ctx, key, group).Err()
	}
	return [2]bridge.ID{a, b}, nil
}

// sweeper dead-letters a skipped range in the background until done or
// closed, retrying Redis errors.
type sweeper struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startSweep(rc *Redis, cfg *config.Config, rng [2]bridge.ID, dl handlers.DeadLetterWriter, hooks handlers.Hooks, log *zap.Logger) *sweeper {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sweeper{cancel: cancel}
	if rng[1].IsZero() {
		return s
	}
	key, group := cfg.Stream+sweepsSuffix, cfg.Group()
	r := streams.NewReader(rc.Client, cfg.Stream)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		start, from := time.Now(), rng[0]
		retry := backoff.New(100*time.Millisecond, cfg.RedisRetryBackoff.Duration)
		for {
			err := handlers.Sweep(ctx, r, cfg.Limits(), dl, hooks, from, rng[1], cfg.IngestBatch.N, func(last bridge.ID) error {
				from = last
				if last == rng[1] {
					return rc.Client.HDel(ctx, key, group).Err()
				}
				return rc.Client.HSet(ctx, key, group, last.String()+" "+rng[1].String()).Err()
			})
			if err == nil {
				log.Info("skipped entries swept for dead letters", zap.Stringer("to", rng[1]), zap.Duration("took", time.Since(start)))
				return
			}
			if ctx.Err() != nil {
				return
			}
			log.Warn("sweep for dead letters failed, retrying", zap.Error(err))
			if !retry.Wait(ctx) {
				return
			}
		}
	}()
	return s
}

func (s *sweeper) Close() {
	s.cancel()
	s.wg.Wait()
}
