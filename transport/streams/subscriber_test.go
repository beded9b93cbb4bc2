package streams

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func TestSubscriberOrderAndBatchAcks(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	cfg := testConfig(t, "s")
	cfg.StartID = func(context.Context) (string, error) { return "0-0", nil }
	hooks := &countingHooks{}
	cfg.Hooks = hooks
	cfg.BatchSize = 64 // several reads for 1000 entries
	ids := addN(t, c, "s", 1000)

	var got received
	sub := newSub(t, c, cfg)
	runRouter(t, sub, "s", func(m *message.Message) error {
		if m.UUID != m.Metadata.Get(MetadataEntryID) {
			return fmt.Errorf("uuid %s != metadata id %s", m.UUID, m.Metadata.Get(MetadataEntryID))
		}
		if rand.IntN(10) == 0 {
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond) // shuffle goroutines a bit
		}
		got.add(m.UUID)
		return nil
	})
	waitFor(t, 20*time.Second, func() error {
		if n := len(got.snapshot()); n < len(ids) {
			return fmt.Errorf("%d of %d received", n, len(ids))
		}
		if p := pendingCount(t, c, "s", cfg.Group); p != 0 {
			return fmt.Errorf("%d still pending", p)
		}
		// The hook runs after XACK returns: Redis may show nothing pending
		// a moment before the last batch is counted.
		if n := hooks.acked.Load(); n < int64(len(ids)) {
			return fmt.Errorf("%d acks counted", n)
		}
		return nil
	})
	if !slices.Equal(got.snapshot(), ids) {
		t.Fatal("entries not received exactly once in stream order")
	}
	if hooks.acked.Load() != 1000 {
		t.Errorf("acked %d, want 1000", hooks.acked.Load())
	}
	if calls := hooks.ackCalls.Load(); calls > 200 {
		t.Errorf("%d XACK calls for 1000 entries: acks are not batched", calls)
	}
	t.Logf("1000 entries acked with %d XACK calls", hooks.ackCalls.Load())
}

func TestSubscriberMetadata(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	cfg := testConfig(t, "s")
	cfg.StartID = func(context.Context) (string, error) { return "0", nil }
	id, err := c.XAdd(ctxT(t), &redis.XAddArgs{Stream: "s", ID: "1700000000123-7", Values: []any{"to", "user:1", "data", `{"a":1}`, "x", "y"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	sub := newSub(t, c, cfg)
	ch, err := sub.Subscribe(ctxT(t), "s")
	if err != nil {
		t.Fatal(err)
	}
	m := recv(t, ch)
	want := message.Metadata{"to": "user:1", "data": `{"a":1}`, "x": "y", MetadataEntryID: id, MetadataEntryTime: "1700000000123"}
	if m.UUID != id || len(m.Payload) != 0 || !mapsEqual(m.Metadata, want) {
		t.Fatalf("got uuid %s payload %q metadata %v, want %s, nil, %v", m.UUID, m.Payload, m.Metadata, id, want)
	}
	m.Ack()
	if _, err := sub.Subscribe(ctxT(t), "s"); err == nil {
		t.Error("second Subscribe of the same topic succeeded")
	}
	if _, err := sub.Subscribe(ctxT(t), "other"); err == nil {
		t.Error("Subscribe of another topic succeeded")
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestSubscriberNackResends(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	cfg := testConfig(t, "s")
	cfg.StartID = func(context.Context) (string, error) { return "0", nil }
	ids := addN(t, c, "s", 2)
	sub := newSub(t, c, cfg)
	ch, err := sub.Subscribe(ctxT(t), "s")
	if err != nil {
		t.Fatal(err)
	}
	first := recv(t, ch)
	first.Nack()
	again := recv(t, ch)
	if again == first || again.UUID != ids[0] || again.Metadata.Get("data") != "0" {
		t.Fatalf("after nack got %v (%v), want a new message for %s", again.UUID, again.Metadata, ids[0])
	}
	again.Ack()
	if m := recv(t, ch); m.UUID != ids[1] {
		t.Fatalf("got %s, want %s", m.UUID, ids[1])
	} else {
		m.Ack()
	}
}

// Each delivery attempt has its own context: live while the handler has the
// message, done once it is acked or nacked (the resend has a fresh one) or
// the Subscriber closes, and it carries the Subscribe context's values.
func TestSubscriberMessageContext(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	cfg := testConfig(t, "s")
	cfg.StartID = func(context.Context) (string, error) { return "0", nil }
	addN(t, c, "s", 3)
	sub := newSub(t, c, cfg)
	type key struct{}
	ch, err := sub.Subscribe(context.WithValue(ctxT(t), key{}, "v"), "s")
	if err != nil {
		t.Fatal(err)
	}
	done := func(m *message.Message) error {
		select {
		case <-m.Context().Done():
			return nil
		default:
			return fmt.Errorf("context of %s not done", m.UUID)
		}
	}
	settle := func(m *message.Message, settle func() bool) {
		t.Helper()
		if err := done(m); err == nil {
			t.Fatalf("context of %s done before it was settled", m.UUID)
		}
		if v, _ := m.Context().Value(key{}).(string); v != "v" {
			t.Fatalf("context of %s lost the Subscribe context's value: %q", m.UUID, v)
		}
		settle()
		waitFor(t, 5*time.Second, func() error { return done(m) })
	}
	first := recv(t, ch)
	settle(first, first.Nack)
	again := recv(t, ch)
	settle(again, again.Ack)
	second := recv(t, ch)
	settle(second, second.Ack)
	inFlight := recv(t, ch)
	if err := done(inFlight); err == nil {
		t.Fatal("context done before Close")
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := done(inFlight); err != nil {
		t.Fatalf("after Close: %v", err)
	}
}

// A handler that never acks (a crash) leaves the entry pending; the next
// Subscriber with the same consumer reads it first.
func TestSubscriberPendingRereadAfterRestart(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	cfg := testConfig(t, "s")
	cfg.StartID = func(context.Context) (string, error) { return "0", nil }
	ids := addN(t, c, "s", 6)

	sub := newSub(t, c, cfg)
	ch, err := sub.Subscribe(ctxT(t), "s")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		m := recv(t, ch)
		if m.UUID != ids[i] {
			t.Fatalf("got %s, want %s", m.UUID, ids[i])
		}
		m.Ack()
	}
	m := recv(t, ch) // ids[3] is never acked: the process "dies"
	if m.UUID != ids[3] {
		t.Fatalf("got %s, want %s", m.UUID, ids[3])
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(ctxT(t), "s"); !errors.Is(err, ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	// Close flushed the three acks; ids[3] and, depending on the batch read,
	// later ones are pending.
	pend, err := c.XPendingExt(ctxT(t), &redis.XPendingExtArgs{Stream: "s", Group: cfg.Group, Start: "-", End: "+", Count: 10}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(pend) == 0 || pend[0].ID != ids[3] {
		t.Fatalf("pending after close: %v, want to start at %s", pend, ids[3])
	}

	cfg.StartID = func(context.Context) (string, error) {
		t.Error("StartID called for an existing group")
		return "0", nil
	}
	sub2 := newSub(t, c, cfg)
	ch2, err := sub2.Subscribe(ctxT(t), "s")
	if err != nil {
		t.Fatal(err)
	}
	for i := 3; i < 6; i++ {
		m := recv(t, ch2)
		if m.UUID != ids[i] {
			t.Fatalf("after restart got %s, want %s", m.UUID, ids[i])
		}
		m.Ack()
	}
	waitFor(t, 5*time.Second, func() error {
		if p := pendingCount(t, c, "s", cfg.Group); p != 0 {
			return fmt.Errorf("%d pending", p)
		}
		return nil
	})
}

func TestSubscriberExistingGroupKeepsPosition(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	ids := addN(t, c, "s", 5)
	cfg := testConfig(t, "s")
	if err := c.XGroupCreate(ctxT(t), "s", cfg.Group, ids[2]).Err(); err != nil {
		t.Fatal(err)
	}
	var called atomic.Bool
	cfg.StartID = func(context.Context) (string, error) { called.Store(true); return "0", nil }
	sub := newSub(t, c, cfg)
	ch, err := sub.Subscribe(ctxT(t), "s")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range ids[3:] {
		m := recv(t, ch)
		if m.UUID != want {
			t.Fatalf("got %s, want %s", m.UUID, want)
		}
		m.Ack()
	}
	if called.Load() {
		t.Error("StartID was called although the group existed")
	}
}

func TestSubscriberMissingGroupCreatedAtStartID(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	ids := addN(t, c, "s", 5)
	cfg := testConfig(t, "s")
	cfg.StartID = func(context.Context) (string, error) { return ids[1], nil }
	cfg.OnGroupRecreated = func() { t.Error("OnGroupRecreated on first creation") }
	sub := newSub(t, c, cfg)
	ch, err := sub.Subscribe(ctxT(t), "s")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range ids[2:] {
		m := recv(t, ch)
		if m.UUID != want {
			t.Fatalf("got %s, want %s", m.UUID, want)
		}
		m.Ack()
	}
}

func TestSubscriberDefaultStartIDIsNewestEntry(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	addN(t, c, "s", 3)
	cfg := testConfig(t, "s")
	sub := newSub(t, c, cfg)
	ch, err := sub.Subscribe(ctxT(t), "s")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		groups, err := c.XInfoGroups(ctxT(t), "s").Result()
		if err == nil && len(groups) == 0 {
			err = errors.New("no group yet")
		}
		return err
	})
	ids := addN(t, c, "s", 1)
	m := recv(t, ch)
	if m.UUID != ids[0] {
		t.Fatalf("got %s, want the first new entry %s", m.UUID, ids[0])
	}
	m.Ack()
}

func TestSubscriberRejectsDollarStartID(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	cfg := testConfig(t, "s")
	hooks := &countingHooks{}
	cfg.Hooks = hooks
	cfg.StartID = func(context.Context) (string, error) { return "$", nil }
	sub := newSub(t, c, cfg)
	if _, err := sub.Subscribe(ctxT(t), "s"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		if hooks.errs.Load() < 2 {
			return errors.New("no retried error yet")
		}
		return nil
	})
	if n, _ := c.Exists(ctxT(t), "s").Result(); n != 0 {
		t.Fatal("group created at $")
	}
}

// Entries trimmed while pending come back from XREADGROUP … 0 without fields
// (Redis 7): they are acked and not passed on.
func TestSubscriberSkipsTrimmedPending(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	cfg := testConfig(t, "s")
	ids := addN(t, c, "s", 5)
	if err := c.XGroupCreate(ctxT(t), "s", cfg.Group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	// Make all five pending for our consumer, then delete two.
	if err := c.XReadGroup(ctxT(t), &redis.XReadGroupArgs{Group: cfg.Group, Consumer: cfg.Consumer, Streams: []string{"s", ">"}, Count: 5, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XDel(ctxT(t), "s", ids[1], ids[3]).Err(); err != nil {
		t.Fatal(err)
	}
	sub := newSub(t, c, cfg)
	ch, err := sub.Subscribe(ctxT(t), "s")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{ids[0], ids[2], ids[4]} {
		m := recv(t, ch)
		if m.UUID != want {
			t.Fatalf("got %s, want %s", m.UUID, want)
		}
		m.Ack()
	}
	waitFor(t, 5*time.Second, func() error {
		if p := pendingCount(t, c, "s", cfg.Group); p != 0 {
			return fmt.Errorf("%d pending", p)
		}
		return nil
	})
}

func TestSubscriberRecreatesLostGroup(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	cfg := testConfig(t, "s")
	var last atomic.Value
	last.Store("0-0")
	cfg.StartID = func(context.Context) (string, error) { return last.Load().(string), nil }
	var recreated atomic.Int32
	cfg.OnGroupRecreated = func() { recreated.Add(1) }
	var got received
	sub := newSub(t, c, cfg)
	runRouter(t, sub, "s", func(m *message.Message) error {
		got.add(m.UUID)
		last.Store(m.UUID) // the core's newest windowed entry
		return nil
	})
	ids := addN(t, c, "s", 3)
	waitFor(t, 5*time.Second, func() error {
		if n := len(got.snapshot()); n != 3 {
			return fmt.Errorf("%d of 3", n)
		}
		return nil
	})
	if err := c.XGroupDestroy(ctxT(t), "s", cfg.Group).Err(); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, addN(t, c, "s", 3)...)
	waitFor(t, 10*time.Second, func() error {
		if recreated.Load() != 1 {
			return fmt.Errorf("recreated %d times", recreated.Load())
		}
		if n := len(got.snapshot()); n != 6 {
			return fmt.Errorf("%d of 6", n)
		}
		return nil
	})
	if !slices.Equal(got.snapshot(), ids) {
		t.Fatalf("got %v, want %v", got.snapshot(), ids)
	}
}

// Redis is killed and restarted (AOF, fsync always) under a running
// Subscriber while a producer keeps adding: every entry whose XADD succeeded
// is received, in order, and in the end nothing is pending.
func TestSubscriberSurvivesRedisRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AppendOnly: true, FsyncAlways: true})
	c := srv.Client()
	cfg := testConfig(t, "s")
	cfg.StartID = func(context.Context) (string, error) { return "0", nil }
	hooks := &countingHooks{}
	cfg.Hooks = hooks
	var got received
	sub := newSub(t, c, cfg)
	runRouter(t, sub, "s", func(m *message.Message) error {
		got.add(m.UUID)
		return nil
	})

	var produced []string
	add := func(n int) {
		for i := 0; i < n; i++ {
			id, err := c.XAdd(ctxT(t), &redis.XAddArgs{Stream: "s", Values: []any{"to", "*", "data", "1"}}).Result()
			if err == nil {
				produced = append(produced, id)
			}
		}
	}
	add(200)
	waitFor(t, 10*time.Second, func() error {
		if n := len(got.snapshot()); n < 200 {
			return fmt.Errorf("%d of 200 before restart", n)
		}
		return nil
	})
	srv.Restart()
	add(200)
	srv.Restart()
	add(200)
	waitFor(t, 30*time.Second, func() error {
		seen := make(map[string]bool)
		for _, id := range got.snapshot() {
			seen[id] = true
		}
		for _, id := range produced {
			if !seen[id] {
				return fmt.Errorf("entry %s not received (%d produced, %d received)", id, len(produced), len(seen))
			}
		}
		if p := pendingCount(t, c, "s", cfg.Group); p != 0 {
			return fmt.Errorf("%d pending", p)
		}
		return nil
	})
	// Redelivery is allowed (at least once) but never backwards past an
	// entry handled later: the received sequence, deduplicated, is ordered.
	var dedup []string
	seen := make(map[string]bool)
	for _, id := range got.snapshot() {
		if !seen[id] {
			seen[id] = true
			dedup = append(dedup, id)
		}
	}
	if !slices.Equal(dedup, produced) {
		t.Fatalf("received order differs from stream order")
	}
	t.Logf("%d produced, %d received, %d redis errors survived", len(produced), len(got.snapshot()), hooks.errs.Load())
}

// Batched: a read batch is one message; its entries come in stream order with
// their fields, its Ack acknowledges them all, and a Nack brings again the
// entries not marked Settled.
func TestSubscriberBatched(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	cfg := testConfig(t, "s")
	cfg.StartID = func(context.Context) (string, error) { return "0-0", nil }
	cfg.Batched = true
	cfg.BatchSize = 64
	ids := addN(t, c, "s", 1000)

	var got received
	var messages, nacked atomic.Int32
	sub := newSub(t, c, cfg)
	runRouter(t, sub, "s", func(m *message.Message) error {
		entries := Entries(m)
		if len(entries) == 0 || len(entries) > 64 {
			return fmt.Errorf("batch of %d entries", len(entries))
		}
		if m.UUID != entries[0].ID || m.Metadata.Get(MetadataEntryID) != entries[0].ID {
			return fmt.Errorf("uuid %s, metadata id %s, first entry %s", m.UUID, m.Metadata.Get(MetadataEntryID), entries[0].ID)
		}
		if messages.Add(1) == 3 && nacked.Add(1) == 1 {
			// Half of it is done with: only the other half comes again.
			half := len(entries) / 2
			for _, e := range entries[:half] {
				got.add(e.ID)
			}
			Settled(m, half)
			return errors.New("nack the third batch once")
		}
		for _, e := range entries {
			if e.Fields["to"] == "" {
				return fmt.Errorf("entry %s without its fields: %v", e.ID, e.Fields)
			}
			got.add(e.ID)
		}
		return nil
	})
	waitFor(t, 20*time.Second, func() error {
		if n := len(got.snapshot()); n < len(ids) {
			return fmt.Errorf("%d of %d received", n, len(ids))
		}
		if p := pendingCount(t, c, "s", cfg.Group); p != 0 {
			return fmt.Errorf("%d still pending", p)
		}
		return nil
	})
	if !slices.Equal(got.snapshot(), ids) {
		t.Fatal("entries not received exactly once in stream order")
	}
	if n := messages.Load(); n >= 1000/2 {
		t.Errorf("%d messages for 1000 entries: not batched", n)
	}
}
