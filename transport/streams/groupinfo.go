package streams

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// GroupLag is how far a consumer group is behind its stream: Lag entries not
// yet delivered to it, Pending delivered and not yet acknowledged.
type GroupLag struct {
	Lag, Pending int64
}

// ReadGroupLag reads group's lag and pending count on stream (XINFO GROUPS).
// found is false when the stream or the group does not exist.
//
// Redis answers no lag once entries were deleted inside the range the group
// has not read (XDEL, or trimming past the group). XLEN is then used: an
// upper bound, exact when the group is behind the oldest entry, so a lag
// alert still fires for a node far behind instead of seeing -1.
func ReadGroupLag(ctx context.Context, c redis.UniversalClient, stream, group string) (lag GroupLag, found bool, err error) {
	groups, err := c.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if isNoStream(err) {
			return GroupLag{}, false, nil
		}
		return GroupLag{}, false, err
	}
	for _, g := range groups {
		if g.Name != group {
			continue
		}
		lag := GroupLag{Lag: g.Lag, Pending: g.Pending}
		if lag.Lag < 0 {
			if lag.Lag, err = c.XLen(ctx, stream).Result(); err != nil {
				return GroupLag{}, false, err
			}
		}
		return lag, true, nil
	}
	return GroupLag{}, false, nil
}

// GroupPosition reads group's last-delivered id on stream (XINFO GROUPS).
// found is false when the stream or the group does not exist.
func GroupPosition(ctx context.Context, c redis.UniversalClient, stream, group string) (lastDelivered string, found bool, err error) {
	groups, err := c.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if isNoStream(err) {
			return "", false, nil
		}
		return "", false, err
	}
	for _, g := range groups {
		if g.Name == group {
			return g.LastDeliveredID, true, nil
		}
	}
	return "", false, nil
}

// MoveGroup sets group's last-delivered id to id (XGROUP SETID); its pending
// entries stay pending. entriesRead > 0 is passed as ENTRIESREAD (Redis 7+)
// so that XINFO GROUPS keeps reporting the group's lag; 0 leaves it to Redis.
func MoveGroup(ctx context.Context, c redis.UniversalClient, stream, group, id string, entriesRead int64) error {
	args := []any{"XGROUP", "SETID", stream, group, id}
	if entriesRead > 0 {
		args = append(args, "ENTRIESREAD", entriesRead)
	}
	return c.Do(ctx, args...).Err()
}
