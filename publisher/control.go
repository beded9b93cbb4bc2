package publisher

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/redis/go-redis/v9"
)

// RevokedKey is the hash of revocations next to stream: field user:<id>,
// group:<name> or * → unix seconds of the newest revocation. Nodes refuse a
// handshake whose token's iat is older than a revocation of its user, one of
// its groups or *, so a revoked client cannot come back with the same token.
func RevokedKey(stream string) string { return stream + ":revoked" }

// Disconnect revokes the connections of to on every node: it records the
// revocation (RevokedKey, now in unix seconds, per item of to) and then
// appends a control entry (to, control=disconnect, reason). Every node closes
// the matching live connections with 4001 "revoked: <reason>" once it has
// delivered everything before the entry. reason is optional, one line. The
// hash is written first, so a client closed by the entry and reconnecting at
// once already meets the revocation. It returns the entry's id.
func (p *Publisher) Disconnect(ctx context.Context, to, reason string) (string, error) {
	if p.stream == "" {
		return "", errors.New("publisher: stream is empty")
	}
	if _, err := bridge.NewControl(bridge.ID{}, bridge.ControlDisconnect, to, reason, p.lim); err != nil {
		return "", err
	}
	now := strconv.FormatInt(time.Now().Unix(), 10)
	var fields []any
	bridge.ForEachRecipient(to, func(kind bridge.RecipientKind, name string) {
		switch kind {
		case bridge.KindUser:
			fields = append(fields, bridge.UserPrefix+name, now)
		case bridge.KindGroup:
			fields = append(fields, bridge.GroupPrefix+name, now)
		default:
			fields = append(fields, bridge.Broadcast, now)
		}
	})
	// Two commands, not MULTI: in a cluster the hash and the stream may sit
	// on different shards. The hash first: see above.
	if err := p.client.HSet(ctx, RevokedKey(p.stream), fields...).Err(); err != nil {
		return "", err
	}
	values := []any{"to", to, "control", bridge.ControlDisconnect}
	if reason != "" {
		values = append(values, "reason", reason)
	}
	args := &redis.XAddArgs{Stream: p.stream, Values: values}
	if p.MaxLen > 0 {
		args.MaxLen, args.Approx = p.MaxLen, true
	}
	return p.client.XAdd(ctx, args).Result()
}
