package handlers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/notifybridge/notifybridge/internal/testwait"
	"github.com/notifybridge/notifybridge/transport/streams"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor and ctxT are the shared bounded waits (internal/testwait).
func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	testwait.For(t, timeout, "condition", cond)
}

func ctxT(t testing.TB) context.Context { return testwait.Context(t) }

// window records appended events like the core: false for an id it holds.
type window struct {
	mu     sync.Mutex
	events []*bridge.Event
	seen   map[bridge.ID]bool
	// before, when set, runs first and may panic or block.
	before func(ev *bridge.Event)
}

func (w *window) Append(ev *bridge.Event) bool {
	if w.before != nil {
		w.before(ev)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen == nil {
		w.seen = map[bridge.ID]bool{}
	}
	if w.seen[ev.ID] {
		return false
	}
	w.seen[ev.ID] = true
	w.events = append(w.events, ev)
	return true
}

func (w *window) ids() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, len(w.events))
	for i, ev := range w.events {
		out[i] = ev.ID.String()
	}
	return out
}

// inBothModes runs test with a message per entry and with a message per read
// batch (streams.Config.Batched, as the node runs): the policy is the same.
func inBothModes(t *testing.T, test func(t *testing.T, batched bool)) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) { test(t, batched) })
	}
}

type ingest struct {
	c    *redis.Client
	sub  *streams.Subscriber
	r    *message.Router
	run  chan error
	once sync.Once
}

// startIngest runs subscriber and router over stream s; both stop at cleanup
// or by stop().
func startIngest(t *testing.T, c *redis.Client, batched bool, app Appender, dl DeadLetterWriter, mod func(*IngestConfig)) *ingest {
	t.Helper()
	log := zaptest.NewLogger(t)
	sub, err := streams.NewSubscriber(c, streams.Config{
		Stream: "s", Group: "notifybridge-n1", Consumer: "n1", Batched: batched,
		Block: 100 * time.Millisecond, CloseTimeout: 300 * time.Millisecond, Logger: log,
		StartID: func(context.Context) (string, error) { return "0-0", nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if dl == nil {
		dl, err = streams.NewDeadLetter(c, "s", 1000)
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg := IngestConfig{Stream: "s", Limits: bridge.Limits{MaxEventBytes: 64, MaxRecipients: 3}, Appender: app, DeadLetter: dl,
		RetryInitial: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond, CloseTimeout: 2 * time.Second, Logger: log}
	if mod != nil {
		mod(&cfg)
	}
	r, err := NewRouter(sub, cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := &ingest{c: c, sub: sub, r: r, run: make(chan error, 1)}
	go func() { in.run <- r.Run(context.Background()) }()
	select {
	case <-r.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("router did not start")
	}
	t.Cleanup(in.stop)
	return in
}

func (in *ingest) stop() {
	in.once.Do(func() {
		_ = in.r.Close()
		_ = in.sub.Close()
		select {
		case <-in.run:
		case <-time.After(10 * time.Second):
			panic("router did not stop")
		}
	})
}

func xadd(t testing.TB, c redis.UniversalClient, values ...any) string {
	t.Helper()
	id, err := c.XAdd(ctxT(t), &redis.XAddArgs{Stream: "s", Values: values}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func deadLetters(t testing.TB, c redis.UniversalClient) []redis.XMessage {
	t.Helper()
	msgs, err := c.XRange(ctxT(t), "s:dead", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func TestIngestDeadLettersEveryBadKindOnceInOrder(t *testing.T) {
	inBothModes(t, func(t *testing.T, batched bool) {
		srv := redistest.Start(t)
		c := srv.Client()
		bad := []struct {
			fields []any
			reason string
		}{
			{[]any{"data", "1"}, "to: field is missing"},
			{[]any{"to", "*"}, "data: field is missing"},
			{[]any{"to", "user:1 ", "data", "1"}, "to: user id \"1 \" contains whitespace"},
			{[]any{"to", "user:1,,user:2", "data", "1"}, "to: empty recipient item"},
			{[]any{"to", "team:x", "data", "1"}, "to: item \"team:x\": want user:<id>, group:<name> or *"},
			{[]any{"to", "user:1,user:2,user:3,user:4", "data", "1"}, "to: more than 3 recipients"},
			{[]any{"to", "*", "type", "a/b", "data", "1"}, "type: \"a/b\" has byte '/' at 1, allowed are [A-Za-z0-9._:-]"},
			{[]any{"to", "*", "data", "{"}, "data: is not valid JSON"},
			{[]any{"to", "*", "data", "\"\xc3\x28\""}, "data: is not valid UTF-8"},
			{[]any{"to", "*", "data", "\t1"}, "data: has leading or trailing whitespace"},
			{[]any{"to", "*", "data", `"` + strings.Repeat("x", 63) + `"`}, "data: is 65 bytes, max_event_bytes is 64"},
		}
		var want []string
		type dead struct{ id, reason string }
		var wantDead []dead
		want = append(want, xadd(t, c, "to", "*", "data", "0"))
		for _, b := range bad {
			wantDead = append(wantDead, dead{xadd(t, c, b.fields...), b.reason})
			want = append(want, xadd(t, c, "to", "user:1", "data", `"`+strings.Repeat("x", 62)+`"`)) // exactly 64 bytes
		}
		w := &window{}
		startIngest(t, c, batched, w, nil, nil)
		waitFor(t, 10*time.Second, func() error {
			if n := len(w.ids()); n != len(want) {
				return fmt.Errorf("%d of %d good entries", n, len(want))
			}
			if n := len(deadLetters(t, c)); n != len(bad) {
				return fmt.Errorf("%d of %d dead letters", n, len(bad))
			}
			p, err := c.XPending(ctxT(t), "s", "notifybridge-n1").Result()
			if err != nil || p.Count != 0 {
				return fmt.Errorf("pending %v %v", p, err)
			}
			return nil
		})
		if !slices.Equal(w.ids(), want) {
			t.Fatalf("good entries %v, want %v", w.ids(), want)
		}
		for i, m := range deadLetters(t, c) {
			if m.Values["id"] != wantDead[i].id || m.Values["reason"] != wantDead[i].reason {
				t.Errorf("dead letter %d: id %v reason %q, want %s %q", i, m.Values["id"], m.Values["reason"], wantDead[i].id, wantDead[i].reason)
			}
			for k := range m.Values {
				if strings.HasPrefix(k, streams.MetadataPrefix) {
					t.Errorf("dead letter %d has our metadata key %s", i, k)
				}
			}
			orig := bad[i].fields
			for j := 0; j < len(orig); j += 2 {
				if m.Values[orig[j].(string)] != orig[j+1] {
					t.Errorf("dead letter %d: field %s = %q, want %q", i, orig[j], m.Values[orig[j].(string)], orig[j+1])
				}
			}
		}
	})
}

func TestIngestWatermillPublishedEntries(t *testing.T) {
	inBothModes(t, func(t *testing.T, batched bool) {
		srv := redistest.Start(t)
		c := srv.Client()
		pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: c}, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		msg := message.NewMessage(watermill.NewUUID(), []byte(`{"fiber":"F-12"}`))
		msg.Metadata.Set("to", "group:ops")
		msg.Metadata.Set("type", "alarm.fiber_break")
		bad := message.NewMessage(watermill.NewUUID(), []byte(`{"x":1}`)) // no to
		plainAfter := message.NewMessage(watermill.NewUUID(), []byte(`2`))
		plainAfter.Metadata.Set("to", "*")
		if err := pub.Publish("s", msg, bad, plainAfter); err != nil {
			t.Fatal(err)
		}
		w := &window{}
		startIngest(t, c, batched, w, nil, nil)
		waitFor(t, 10*time.Second, func() error {
			if n := len(w.ids()); n != 2 {
				return fmt.Errorf("%d of 2", n)
			}
			if n := len(deadLetters(t, c)); n != 1 {
				return fmt.Errorf("%d dead letters", n)
			}
			return nil
		})
		ev := w.events[0]
		wantPayload := `{"id":"` + ev.ID.String() + `","type":"alarm.fiber_break","data":{"fiber":"F-12"}}`
		if string(ev.Payload()) != wantPayload || ev.To != "group:ops" {
			t.Fatalf("got %s to %s", ev.Payload(), ev.To)
		}
		if w.events[1].Type != bridge.DefaultType {
			t.Errorf("type %s", w.events[1].Type)
		}
		dl := deadLetters(t, c)[0]
		if dl.Values["reason"] != "to: metadata key is missing (Watermill entry)" || dl.Values[FieldWatermillUUID] != bad.UUID {
			t.Errorf("dead letter %v", dl.Values)
		}
	})
}

// A failing (here: panicking) handler is retried in place; one that keeps
// failing is dead-lettered with the error, and the next entry follows.
func TestIngestRetriesThenDeadLetters(t *testing.T) {
	inBothModes(t, func(t *testing.T, batched bool) {
		srv := redistest.Start(t)
		c := srv.Client()
		flaky := xadd(t, c, "to", "*", "data", `"flaky"`)
		broken := xadd(t, c, "to", "*", "data", `"broken"`)
		after := xadd(t, c, "to", "*", "data", `"after"`)
		var flakyRuns, brokenRuns atomic.Int32
		w := &window{before: func(ev *bridge.Event) {
			switch string(ev.Data()) {
			case `"flaky"`:
				if flakyRuns.Add(1) < 3 {
					panic("not yet")
				}
			case `"broken"`:
				brokenRuns.Add(1)
				panic("window on fire")
			}
		}}
		startIngest(t, c, batched, w, nil, func(cfg *IngestConfig) { cfg.RetryAttempts = 4 })
		waitFor(t, 10*time.Second, func() error {
			if n := len(w.ids()); n != 2 {
				return fmt.Errorf("%d of 2", n)
			}
			return nil
		})
		if got := w.ids(); got[0] != flaky || got[1] != after {
			t.Fatalf("appended %v, want %s %s", got, flaky, after)
		}
		if flakyRuns.Load() != 3 || brokenRuns.Load() != 4 {
			t.Errorf("flaky ran %d times (want 3), broken %d (want 4)", flakyRuns.Load(), brokenRuns.Load())
		}
		dl := deadLetters(t, c)
		if len(dl) != 1 || dl[0].Values["id"] != broken || dl[0].Values["reason"] != "handler panicked: window on fire" {
			t.Fatalf("dead letters %v", dl)
		}
	})
}

type failingDL struct {
	fails atomic.Int32
	next  DeadLetterWriter
}

func (f *failingDL) Write(ctx context.Context, id string, fields map[string]string, reason string) (string, error) {
	if f.fails.Add(-1) >= 0 {
		return "", errors.New("redis is down")
	}
	return f.next.Write(ctx, id, fields, reason)
}

// A dead letter that cannot be written leaves the entry unacked: it comes
// again and is dead-lettered once the write works.
func TestIngestDeadLetterWriteFailureRetries(t *testing.T) {
	inBothModes(t, func(t *testing.T, batched bool) {
		srv := redistest.Start(t)
		c := srv.Client()
		before := xadd(t, c, "to", "*", "data", "0")
		bad := xadd(t, c, "to", "nobody", "data", "1")
		good := xadd(t, c, "to", "*", "data", "1")
		real, err := streams.NewDeadLetter(c, "s", 1000)
		if err != nil {
			t.Fatal(err)
		}
		dl := &failingDL{next: real}
		dl.fails.Store(2)
		// The entry settled before the failing one is not taken again when
		// the (batched) message comes back.
		var beforeRuns atomic.Int32
		w := &window{before: func(ev *bridge.Event) {
			if ev.ID.String() == before {
				beforeRuns.Add(1)
			}
		}}
		startIngest(t, c, batched, w, dl, nil)
		waitFor(t, 10*time.Second, func() error {
			if n := len(w.ids()); n != 2 {
				return fmt.Errorf("%d of 2", n)
			}
			return nil
		})
		if d := deadLetters(t, c); len(d) != 1 || d[0].Values["id"] != bad || !slices.Equal(w.ids(), []string{before, good}) {
			t.Fatalf("dead letters %v, appended %v", d, w.ids())
		}
		if n := beforeRuns.Load(); n != 1 {
			t.Errorf("the entry before the failing one was taken %d times, want 1", n)
		}
	})
}

// At least once: an entry whose handler did not finish before the process
// stopped is delivered again by the next run with the same consumer.
func TestIngestAtLeastOnceAcrossRestart(t *testing.T) {
	inBothModes(t, func(t *testing.T, batched bool) {
		srv := redistest.Start(t)
		c := srv.Client()
		var ids []string
		for i := 0; i < 5; i++ {
			ids = append(ids, xadd(t, c, "to", "*", "data", fmt.Sprint(i)))
		}
		release := make(chan struct{})
		var released atomic.Bool
		first := &window{before: func(ev *bridge.Event) {
			if ev.ID.String() == ids[2] && !released.Load() {
				<-release // the process "dies" while this entry is being handled
			}
		}}
		in := startIngest(t, c, batched, first, nil, func(cfg *IngestConfig) { cfg.CloseTimeout = 100 * time.Millisecond })
		waitFor(t, 10*time.Second, func() error {
			if n := len(first.ids()); n != 2 {
				return fmt.Errorf("%d of 2", n)
			}
			return nil
		})
		in.stop()
		released.Store(true)
		close(release)

		// The two settled before the stop are acked (batched: marked
		// streams.Settled) and not read again.
		want := ids[2:]
		second := &window{}
		startIngest(t, c, batched, second, nil, nil)
		waitFor(t, 10*time.Second, func() error {
			if n := len(second.ids()); n != len(want) {
				return fmt.Errorf("%d of %d", n, len(want))
			}
			return nil
		})
		if got := second.ids(); !slices.Equal(got, want) {
			t.Fatalf("after restart %v, want %v", got, want)
		}
	})
}

func TestStore(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	st := NewStore(streams.NewReader(c, "s"), bridge.DefaultLimits)
	info, err := st.Info(ctxT(t))
	if err != nil || info.Exists {
		t.Fatalf("missing stream: %+v %v", info, err)
	}
	a := xadd(t, c, "to", "*", "data", "1")
	b := xadd(t, c, "to", "bad", "data", "2")
	d := xadd(t, c, "to", "user:x", "data", "3")
	ida, _ := bridge.ParseID(a)
	idb, _ := bridge.ParseID(b)
	idd, _ := bridge.ParseID(d)

	evs, last, err := st.Range(ctxT(t), ida.Next(), 10)
	if err != nil || len(evs) != 1 || evs[0].ID != idd || last != idd {
		t.Fatalf("Range: %v %v %v", evs, last, err)
	}
	evs, last, err = st.Range(ctxT(t), ida, 2)
	if err != nil || len(evs) != 1 || evs[0].ID != ida || last != idb {
		t.Fatalf("Range with the bad entry last: %v %v %v", evs, last, err)
	}
	evs, last, err = st.RevRange(ctxT(t), idb, 10)
	if err != nil || len(evs) != 1 || evs[0].ID != ida || last != ida {
		t.Fatalf("RevRange: %v %v %v", evs, last, err)
	}
	info, err = st.Info(ctxT(t))
	if err != nil || !info.Exists || info.Length != 3 || info.FirstID != ida || info.LastGeneratedID != idd ||
		!info.MaxDeletedKnown || !info.MaxDeletedID.IsZero() {
		t.Fatalf("Info, nothing removed: %+v %v", info, err)
	}
	if err := c.XDel(ctxT(t), "s", b).Err(); err != nil {
		t.Fatal(err)
	}
	info, err = st.Info(ctxT(t))
	if err != nil || info.MaxDeletedID != idb {
		t.Fatalf("Info after XDEL: %+v %v", info, err)
	}
	if err := c.XTrimMaxLen(ctxT(t), "s", 1).Err(); err != nil {
		t.Fatal(err)
	}
	info, err = st.Info(ctxT(t))
	if err != nil || info.FirstID != idd || info.MaxDeletedID != idd.Prev() || !ida.Less(info.MaxDeletedID) {
		t.Fatalf("Info after XTRIM: %+v %v", info, err)
	}
	if err := c.XTrimMaxLen(ctxT(t), "s", 0).Err(); err != nil {
		t.Fatal(err)
	}
	info, err = st.Info(ctxT(t))
	if err != nil || !info.Exists || info.Length != 0 || !info.FirstID.IsZero() || info.MaxDeletedID != idd {
		t.Fatalf("Info of an emptied stream: %+v %v", info, err)
	}
}
