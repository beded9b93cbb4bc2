package node

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/transport/wspool"
)

// Presence: every presenceInterval each node replaces its hash
// <stream>:presence:<node_id> (field user:<id> / group:<name> → its
// connections) and sets its TTL to presenceTTL; the sorted set
// <stream>:presence:nodes scores each node by when its hash expires. A
// reader sums the hashes of the nodes whose score is in the future. So a
// count is at most presenceInterval (plus one Redis round trip) stale, and a
// node that died stops counting within presenceTTL.
const (
	presenceInterval = 5 * time.Second
	presenceTTL      = 3 * presenceInterval
)

func presenceKey(stream, node string) string { return stream + ":presence:" + node }
func presenceNodes(stream string) string     { return stream + ":presence:nodes" }

// presencePublisher writes this node's counts until Close.
type presencePublisher struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startPresence(rdb redis.UniversalClient, hub *bridge.Hub, stream, node string, log *zap.Logger) *presencePublisher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &presencePublisher{cancel: cancel}
	p.wg.Go(func() {
		t := time.NewTicker(presenceInterval)
		defer t.Stop()
		for {
			if err := writePresence(ctx, rdb, hub, stream, node); err != nil && ctx.Err() == nil {
				log.Warn("presence: writing counts failed", zap.Error(err))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return p
}

// Close stops the writer and removes this node's counts (a clean stop does
// not wait for the TTL).
func (p *presencePublisher) Close(rdb redis.UniversalClient, stream, node string) {
	p.cancel()
	p.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = rdb.Del(ctx, presenceKey(stream, node)).Err()
	_ = rdb.ZRem(ctx, presenceNodes(stream), node).Err()
}

func writePresence(ctx context.Context, rdb redis.UniversalClient, hub *bridge.Hub, stream, node string) error {
	users, groups := hub.Presence()
	fields := make(map[string]any, len(users)+len(groups))
	for u, n := range users {
		fields[bridge.UserPrefix+u] = n
	}
	for g, n := range groups {
		fields[bridge.GroupPrefix+g] = n
	}
	key := presenceKey(stream, node)
	ctx, cancel := context.WithTimeout(ctx, presenceInterval)
	defer cancel()
	// One MULTI per node key: readers never see a half-replaced hash. The
	// node set is another key (another shard in a cluster), written after.
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		if len(fields) > 0 {
			p.HSet(ctx, key, fields)
			p.PExpire(ctx, key, presenceTTL)
		}
		return nil
	})
	if err != nil {
		return err
	}
	now := time.Now()
	nodes := presenceNodes(stream)
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, nodes, redis.Z{Score: float64(now.Add(presenceTTL).UnixMilli()), Member: node})
		p.ZRemRangeByScore(ctx, nodes, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
		return nil
	})
	return err
}

// PresenceCount sums the live nodes' counts of item (user:<id> or
// group:<name>, already validated): connections and how many nodes hold any.
func PresenceCount(ctx context.Context, rdb redis.UniversalClient, stream, item string) (conns, nodes int64, err error) {
	live, err := rdb.ZRangeByScore(ctx, presenceNodes(stream), &redis.ZRangeBy{
		Min: strconv.FormatInt(time.Now().UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return 0, 0, err
	}
	for _, n := range live {
		v, err := rdb.HGet(ctx, presenceKey(stream, n), item).Int64()
		switch {
		case err == redis.Nil:
			continue
		case err != nil:
			return 0, 0, fmt.Errorf("presence of node %s: %w", n, err)
		}
		conns += v
		nodes++
	}
	return conns, nodes, nil
}

// PresenceItem turns ?user= or ?group= into a recipient item, or says why not.
func PresenceItem(user, group string) (string, error) {
	switch {
	case (user == "") == (group == ""):
		return "", fmt.Errorf("give exactly one of user= and group=")
	case user != "":
		if err := bridge.ValidateName(user); err != nil {
			return "", fmt.Errorf("user: %v", err)
		}
		return bridge.UserPrefix + user, nil
	default:
		if err := bridge.ValidateName(group); err != nil {
			return "", fmt.Errorf("group: %v", err)
		}
		return bridge.GroupPrefix + group, nil
	}
}

// publicPresenceHandler is GET /v1/presence on listen (presence_public): the
// caller proves who it is as for /ws (a token from Authorization: Bearer,
// the notifybridge_token cookie or ?token=, checked by the same
// authenticator, revocations included), then gets the same answer as on
// admin_listen. Any authenticated caller may ask about any user or group:
// the counts say how many are connected, never who or from where.
func publicPresenceHandler(auth wspool.Authenticator, rdb redis.UniversalClient, stream string) http.Handler {
	inner := presenceHandler(rdb, stream)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := auth.Authenticate(&wspool.AuthRequest{Query: r.URL.Query(), Authorization: r.Header.Get("Authorization"),
			Cookie: r.Header.Get("Cookie")})
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="notifybridge presence"`)
			publishError(w, http.StatusUnauthorized, "presence: "+oneLineErr(err))
			return
		}
		// The answer is about other people: no cache may keep it for
		// another caller.
		w.Header().Set("Cache-Control", "no-store")
		inner.ServeHTTP(w, r)
	})
}
