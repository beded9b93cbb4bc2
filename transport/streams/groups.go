package streams

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ExpireGroups deletes the consumer groups of stream whose name starts with
// prefix, other than own, when every consumer of the group has been idle
// longer than ttl: the groups of retired node ids, which would otherwise keep
// their pending entries and their place in XINFO forever. A group without
// consumers is left alone (nothing says how old it is). It returns the
// deleted groups. Any node may run it; two nodes deleting the same group is
// harmless.
func ExpireGroups(ctx context.Context, c redis.UniversalClient, stream, prefix, own string, ttl time.Duration) ([]string, error) {
	groups, err := c.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if isNoStream(err) {
			return nil, nil
		}
		return nil, err
	}
	var deleted []string
	for _, g := range groups {
		if g.Name == own || !strings.HasPrefix(g.Name, prefix) {
			continue
		}
		consumers, err := c.XInfoConsumers(ctx, stream, g.Name).Result()
		if err != nil {
			return deleted, err
		}
		if len(consumers) == 0 {
			continue
		}
		stale := true
		for _, cs := range consumers {
			if cs.Idle <= ttl {
				stale = false
				break
			}
		}
		if !stale {
			continue
		}
		if err := c.XGroupDestroy(ctx, stream, g.Name).Err(); err != nil {
			return deleted, err
		}
		deleted = append(deleted, g.Name)
	}
	return deleted, nil
}

func isNoStream(err error) bool {
	return strings.Contains(err.Error(), "no such key") || strings.HasPrefix(err.Error(), "ERR no such key")
}
