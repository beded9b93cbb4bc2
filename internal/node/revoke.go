package node

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/publisher"
	"github.com/notifybridge/notifybridge/transport/wspool"
)

// revokeCheckTimeout bounds the one HMGET a handshake pays for revocations.
const revokeCheckTimeout = 2 * time.Second

// revocationCheck refuses an identity whose token was issued before the
// newest revocation of its user, one of its groups or * (publisher.RevokedKey).
// A token without iat (and every auth=none identity) cannot prove it is newer
// and is refused while any such revocation is recorded. When Redis does not
// answer the check lets the handshake pass (logged): the node cannot serve
// without Redis anyway, and the stream's control entry still closes what is
// revoked after it arrives.
func revocationCheck(rdb redis.UniversalClient, stream string, log *zap.Logger) func(wspool.Identity) error {
	key := publisher.RevokedKey(stream)
	return func(id wspool.Identity) error {
		fields := make([]string, 0, len(id.Groups)+2)
		fields = append(fields, bridge.UserPrefix+id.User, bridge.Broadcast)
		for _, g := range id.Groups {
			fields = append(fields, bridge.GroupPrefix+g)
		}
		ctx, cancel := context.WithTimeout(context.Background(), revokeCheckTimeout)
		defer cancel()
		vals, err := rdb.HMGet(ctx, key, fields...).Result()
		if err != nil {
			log.Warn("revocation check failed; handshake let through", zap.String("key", key), zap.Error(err))
			return nil
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue
			}
			before, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				continue // not ours to judge: a hand-written field
			}
			if id.IssuedAt.IsZero() || id.IssuedAt.Unix() < before {
				return fmt.Errorf("revoked: %s was revoked at %d; token issued before (get a new token)", fields[i], before)
			}
		}
		return nil
	}
}
