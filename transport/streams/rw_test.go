package streams

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func TestReader(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	r := NewReader(c, "s")
	info, err := r.Info(ctxT(t))
	if err != nil || info.Exists {
		t.Fatalf("missing stream: %+v %v", info, err)
	}
	if msgs, err := r.Range(ctxT(t), "0", 10); err != nil || len(msgs) != 0 {
		t.Fatalf("Range of a missing stream: %v %v", msgs, err)
	}
	ids := addN(t, c, "s", 5)
	msgs, err := r.Range(ctxT(t), ids[1], 2)
	if err != nil || len(msgs) != 2 || msgs[0].ID != ids[1] || msgs[1].ID != ids[2] || msgs[0].Values["data"] != "1" {
		t.Fatalf("Range: %v %v", msgs, err)
	}
	msgs, err = r.RevRange(ctxT(t), ids[3], 10)
	if err != nil || len(msgs) != 4 || msgs[0].ID != ids[3] || msgs[3].ID != ids[0] {
		t.Fatalf("RevRange: %v %v", msgs, err)
	}
	if err := c.XTrimMaxLen(ctxT(t), "s", 3).Err(); err != nil {
		t.Fatal(err)
	}
	info, err = r.Info(ctxT(t))
	// Trimming does not move max-deleted-entry-id; XDEL does.
	want := Info{Exists: true, Length: 3, FirstID: ids[2], LastGeneratedID: ids[4], MaxDeletedID: "0-0", EntriesAdded: 5, MaxDeletedKnown: true}
	if err != nil || info != want {
		t.Fatalf("Info: %+v %v, want %+v", info, err, want)
	}
	if err := c.XDel(ctxT(t), "s", ids[3]).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XTrimMaxLen(ctxT(t), "s", 0).Err(); err != nil {
		t.Fatal(err)
	}
	info, err = r.Info(ctxT(t))
	want = Info{Exists: true, LastGeneratedID: ids[4], MaxDeletedID: ids[3], EntriesAdded: 5, MaxDeletedKnown: true}
	if err != nil || info != want {
		t.Fatalf("Info of an emptied stream: %+v %v, want %+v", info, err, want)
	}
}

func TestDeadLetter(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	if _, err := NewDeadLetter(c, "s", 0); err == nil {
		t.Fatal("dead_maxlen 0 accepted")
	}
	d, err := NewDeadLetter(c, "s", 1000)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{"to": "nobody", "data": "x", "id": "spoofed", MetadataEntryID: "1-1", MetadataEntryTime: "1"}
	if _, err := d.Write(ctxT(t), "1-1", fields, "to: item \"nobody\": want user:<id>, group:<name> or *"); err != nil {
		t.Fatal(err)
	}
	// Read the raw field list to see the order.
	raw, err := c.Do(ctxT(t), "XRANGE", "s:dead", "-", "+").Slice()
	if err != nil || len(raw) != 1 {
		t.Fatalf("%v %v", raw, err)
	}
	var got []string
	for _, v := range raw[0].([]any)[1].([]any) {
		got = append(got, v.(string))
	}
	want := []string{"data", "x", "id", "spoofed", "to", "nobody", "id", "1-1", "reason", "to: item \"nobody\": want user:<id>, group:<name> or *"}
	if !slices.Equal(got, want) {
		t.Fatalf("fields %q, want %q", got, want)
	}
	msgs, _ := c.XRange(ctxT(t), "s:dead", "-", "+").Result()
	if msgs[0].Values["id"] != "1-1" {
		t.Fatalf("the last id field must win: %v", msgs[0].Values)
	}
	for i := 0; i < 1500; i++ {
		if _, err := d.Write(ctxT(t), "1-1", map[string]string{"a": "b"}, "r"); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := c.XLen(ctxT(t), "s:dead").Result(); n > 1200 {
		t.Fatalf("dead-letter stream has %d entries with dead_maxlen 1000", n)
	}
}

func TestTrimmer(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	for _, bad := range []TrimmerConfig{{Stream: "s"}, {Stream: "s", MaxAge: time.Hour, MaxLen: 5}, {MaxLen: 5}, {Stream: "s", MaxLen: -1}} {
		if _, err := NewTrimmer(c, bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	// By age: entries 1000 ms apart, retention 10 s, "now" at 20 s. The small
	// node size makes MINID ~ exact enough to check.
	if err := c.ConfigSet(ctxT(t), "stream-node-max-entries", "2").Err(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		if err := c.XAdd(ctxT(t), &redis.XAddArgs{Stream: "s", ID: strconv.Itoa(i*1000) + "-0", Values: []any{"a", "b"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := NewTrimmer(c, TrimmerConfig{Stream: "s", MaxAge: 10 * time.Second, Interval: time.Hour, Now: func() time.Time { return time.UnixMilli(20000) }})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		first, err := c.XRangeN(ctxT(t), "s", "-", "+", 1).Result()
		if err != nil || len(first) == 0 {
			return fmt.Errorf("%v %v", first, err)
		}
		// MINID ~ removes whole nodes only: the oldest left is at most
		// 10000 and within one node (2 entries) of it.
		if ms, _ := strconv.Atoi(idTime(first[0].ID)); ms > 10000 || ms < 8000 {
			return fmt.Errorf("oldest entry %s, want about 10000-0", first[0].ID)
		}
		return nil
	})
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	// By count.
	addN(t, c, "n", 50)
	tr, err = NewTrimmer(c, TrimmerConfig{Stream: "n", MaxLen: 10, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	waitFor(t, 5*time.Second, func() error {
		if n, _ := c.XLen(ctxT(t), "n").Result(); n > 12 {
			return fmt.Errorf("length %d, want about 10", n)
		}
		return nil
	})
}

// TestTrimmerUsesRedisClock: by default retention by age is measured by
// Redis's TIME, the clock its ids come from, not the node's: here Redis's
// clock says 2001 while the node's says now, and only what is older than an
// hour by Redis's clock goes (by the node's clock everything would).
func TestTrimmerUsesRedisClock(t *testing.T) {
	m := miniredis.RunT(t)
	redisNow := time.Date(2001, 1, 1, 12, 0, 0, 0, time.UTC)
	m.SetTime(redisNow)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer c.Close()
	for _, at := range []time.Time{redisNow.Add(-2 * time.Hour), redisNow.Add(-time.Minute)} {
		if err := c.XAdd(ctxT(t), &redis.XAddArgs{Stream: "s", ID: strconv.FormatInt(at.UnixMilli(), 10) + "-0", Values: []any{"a", "b"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := NewTrimmer(c, TrimmerConfig{Stream: "s", MaxAge: time.Hour, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	waitFor(t, 5*time.Second, func() error {
		msgs, err := c.XRange(ctxT(t), "s", "-", "+").Result()
		if err != nil || len(msgs) != 1 || msgs[0].ID != strconv.FormatInt(redisNow.Add(-time.Minute).UnixMilli(), 10)+"-0" {
			return fmt.Errorf("stream holds %v (%v), want only the entry a minute old by Redis's clock", msgs, err)
		}
		return nil
	})
}
