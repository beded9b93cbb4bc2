package handlers_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/bridge/bridgetest"
	"github.com/notifybridge/notifybridge/handlers"
	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/notifybridge/notifybridge/transport/streams"
	"github.com/redis/go-redis/v9"
)

// TestPropertyRedis runs bridge's property schedules (bridge/bridgetest)
// against a real redis-server through handlers.Store: producers XADD plain
// entries (and undecodable ones), the stream is trimmed with XTRIM MINID,
// and the hubs warm and backfill with XREVRANGE, XRANGE and XINFO STREAM.
// One server for the test, a fresh stream key per schedule.
// BRIDGE_PROP_SEED=<n> replays one schedule; BRIDGE_PROP_N sets the count.
func TestPropertyRedis(t *testing.T) {
	client := redistest.Start(t).Client()
	n := 0
	bridgetest.Run(t, bridgetest.Options{
		N: 3000,
		NewBackend: func(tb testing.TB, _ *rand.Rand) bridgetest.Backend {
			n++
			key := "prop:" + strconv.Itoa(n)
			return &redisBackend{
				Store:  handlers.NewStore(streams.NewReader(client, key), bridge.DefaultLimits),
				tb:     tb,
				client: client,
				key:    key,
			}
		},
		// handlers.Store derives MaxDeletedID from the first entry (Redis
		// does not count trimming in max-deleted-entry-id).
		ConservativeGaps: true,
	})
}

// redisBackend is one stream key on the test's redis-server.
type redisBackend struct {
	*handlers.Store
	tb     testing.TB
	client *redis.Client
	key    string
}

const redisTimeout = 5 * time.Second

func (b *redisBackend) xadd(values map[string]string) bridge.ID {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	raw, err := b.client.XAdd(ctx, &redis.XAddArgs{Stream: b.key, Values: values}).Result()
	if err != nil {
		b.tb.Fatalf("XADD: %v", err)
	}
	id, err := bridge.ParseID(raw)
	if err != nil {
		b.tb.Fatalf("XADD id %q: %v", raw, err)
	}
	return id
}

// Add appends a plain contract entry and returns it decoded as ingest would.
func (b *redisBackend) Add(tb testing.TB, to, typ, data string) *bridge.Event {
	tb.Helper()
	fields := map[string]string{handlers.FieldTo: to, handlers.FieldType: typ, handlers.FieldData: data}
	id := b.xadd(fields)
	ev, err := handlers.DecodeEntry(id, fields, bridge.DefaultLimits)
	if err != nil {
		tb.Fatalf("DecodeEntry(%s): %v", id, err)
	}
	return ev
}

// AddBad appends an entry without a to field.
func (b *redisBackend) AddBad() bridge.ID {
	return b.xadd(map[string]string{handlers.FieldData: `{}`})
}

// Flush deletes the stream key, as Redis restarted without its data loses
// it, and waits for the clock to pass the last id generated, so new ids are
// above every lost one (they are time-based, as after a real restart).
func (b *redisBackend) Flush() {
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	info, err := b.Info(ctx)
	if err != nil {
		b.tb.Fatalf("XINFO: %v", err)
	}
	if err := b.client.Del(ctx, b.key).Err(); err != nil {
		b.tb.Fatalf("DEL: %v", err)
	}
	for uint64(time.Now().UnixMilli()) <= info.LastGeneratedID.Ms {
		time.Sleep(time.Millisecond)
	}
}

// TrimThrough deletes every entry with an id <= last, exactly (no ~).
func (b *redisBackend) TrimThrough(last bridge.ID) {
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	if err := b.client.XTrimMinID(ctx, b.key, last.Next().String()).Err(); err != nil {
		b.tb.Fatalf("XTRIM: %v", err)
	}
}
