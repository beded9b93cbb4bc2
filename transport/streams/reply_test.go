package streams

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestParseXReadMatchesGoRedis reads the same entries raw and through
// go-redis's typed XREADGROUP, over RESP2 and RESP3, and wants the same
// entries: odd values (empty, CRLF inside, binary, long), many fields, a
// pending entry deleted since (no fields), and the null replies.
func TestParseXReadMatchesGoRedis(t *testing.T) {
	srv := redistest.Start(t)
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Protocol: proto})
			t.Cleanup(func() { _ = c.Close() })
			ctx := ctxT(t)
			stream := fmt.Sprintf("p%d", proto)
			values := [][]any{
				{"to", "user:1", "data", `{"a":1}`},
				{"to", "", "type", "x\r\ny", "data", "\x00\xff\r\n$3\r\n*1"},
				{"data", strings.Repeat("z", 70000), "to", "*"},
				{"a", "1", "b", "2", "c", "3", "d", "4", "e", "5", "f", "6", "g", "7", "h", "8", "i", "9"},
			}
			var ids []string
			for _, v := range values {
				id, err := c.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: v}).Result()
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			if err := c.XGroupCreate(ctx, stream, "g", "0").Err(); err != nil {
				t.Fatal(err)
			}
			raw := func(cursor string) ([]entry, error) {
				var buf bytes.Buffer
				err := c.DoRawWriteTo(ctx, &buf, "xreadgroup", "group", "g", "c", "count", 100, "streams", stream, cursor).Err()
				if err != nil {
					return nil, err
				}
				return parseXRead(buf.Bytes(), keyCache{}, nil)
			}
			got, err := raw(">") // the first read makes them pending
			if err != nil {
				t.Fatal(err)
			}
			if err := c.XDel(ctx, stream, ids[1]).Err(); err != nil {
				t.Fatal(err)
			}
			want, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, "0"}, Count: 100, Block: -1}).Result()
			if err != nil {
				t.Fatal(err)
			}
			pending, err := raw("0")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(values) || len(pending) != len(values) {
				t.Fatalf("got %d new and %d pending entries, want %d", len(got), len(pending), len(values))
			}
			// The pending read after the delete matches go-redis's, and the
			// first read matches what was added.
			for i, w := range want[0].Messages {
				wantFields := map[string]string{}
				for k, v := range w.Values {
					wantFields[k] = v.(string)
				}
				if e := pending[i]; e.id != w.ID || !maps.Equal(fieldMap(e), wantFields) {
					t.Errorf("pending entry %d: got %s %q, want %s %q", i, e.id, fieldMap(e), w.ID, wantFields)
				}
				added := map[string]string{}
				for j := 0; j < len(values[i]); j += 2 {
					added[values[i][j].(string)] = values[i][j+1].(string)
				}
				if e := got[i]; e.id != ids[i] || !maps.Equal(fieldMap(e), added) {
					t.Errorf("entry %d: got %s %q, want %s %q", i, e.id, fieldMap(e), ids[i], added)
				}
			}
			if len(pending[1].fields) != 0 {
				t.Errorf("deleted pending entry has fields %q", pending[1].fields)
			}
			if got[1].fields[3] != "x\r\ny" || got[1].fields[5] != "\x00\xff\r\n$3\r\n*1" {
				t.Errorf("odd values: %q", got[1].fields)
			}
			// Nothing new: a null reply.
			if none, err := raw(">"); err != nil || len(none) != 0 {
				t.Errorf("nothing to read: %d entries, %v", len(none), err)
			}
			// An error reply is an error, and NOGROUP is recognised.
			_, err = raw2(ctx, c, "missing")
			if err == nil || !isNoGroup(err) {
				t.Errorf("missing group: %v, want NOGROUP", err)
			}
		})
	}
}

func raw2(ctx context.Context, c *redis.Client, stream string) ([]entry, error) {
	var buf bytes.Buffer
	err := c.DoRawWriteTo(ctx, &buf, "xreadgroup", "group", "nogroup", "c", "count", 1, "streams", stream, ">").Err()
	if err != nil {
		return nil, err
	}
	return parseXRead(buf.Bytes(), keyCache{}, nil)
}

func fieldMap(e entry) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(e.fields); i += 2 {
		m[e.fields[i]] = e.fields[i+1]
	}
	return m
}

func TestParseXReadRejectsBadReplies(t *testing.T) {
	for _, raw := range []string{
		"",
		"*1\r\n", // truncated
		"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*1\r\n$1\r\na\r\n",            // odd field count
		"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\na\r\n$5\r\nb\r\n", // short value
		"*2\r\n",              // two streams
		"+OK\r\n",             // not an array
		"*-1\r\nx",            // trailing bytes
		"-ERR boom\r\n",       // error reply
		"!9\r\nNOGROUP x\r\n", // RESP3 blob error
	} {
		if got, err := parseXRead([]byte(raw), keyCache{}, nil); err == nil {
			t.Errorf("%q: no error, got %v", raw, got)
		}
	}
	var re replyError
	if _, err := parseXRead([]byte("!9\r\nNOGROUP x\r\n"), keyCache{}, nil); !errors.As(err, &re) || !isNoGroup(err) {
		t.Errorf("blob error: %v", err)
	}
}

func TestKeyCacheIsBounded(t *testing.T) {
	k := keyCache{}
	for i := range 1000 {
		if s := k.intern([]byte(fmt.Sprint("k", i))); s != fmt.Sprint("k", i) {
			t.Fatal(s)
		}
	}
	if len(k) > maxCachedKeys {
		t.Fatalf("cache holds %d keys", len(k))
	}
}

// TestSubscriberRESP2 runs the order test over a RESP2 connection.
func TestSubscriberRESP2(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Protocol: 2})
	t.Cleanup(func() { _ = c.Close() })
	cfg := testConfig(t, "s")
	cfg.StartID = func(context.Context) (string, error) { return "0-0", nil }
	cfg.BatchSize = 16
	ids := addN(t, c, "s", 100)
	var got received
	runRouter(t, newSub(t, c, cfg), "s", func(m *message.Message) error {
		if m.Metadata.Get("to") != "*" || m.Metadata.Get(MetadataEntryID) != m.UUID {
			return fmt.Errorf("bad metadata %v", m.Metadata)
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
		return nil
	})
	if g := got.snapshot(); !equalStrings(g, ids) {
		t.Fatalf("got %d entries out of order or twice", len(g))
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
