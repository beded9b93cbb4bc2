package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestIngestCatchesUpTheWholeBacklog runs the ingest scenario end to end: a
// real redis-server, a backlog written before the bridge starts behind it,
// the bridge binary, then the raw loop. It checks correctness only (every
// entry acknowledged by both, none dead-lettered, the stream removed after);
// the rates are printed, never asserted.
func TestIngestCatchesUpTheWholeBacklog(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const n = 3000
	res, err := Run(ctx, Options{Scenario: "ingest", Prefill: n, Size: 200, RedisURL: srv.URL(), Binary: e2e.Binary})
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	res.WriteTable(&table)
	t.Logf("\n%s", table.String())
	if res.Published != n || res.BridgeAcked != n || res.RawAcked != n || res.Lost != 0 || res.DeadLetters != 0 || res.Failed() {
		t.Fatalf("published %d, bridge acked %d, raw acked %d, lost %d, dead-lettered %d", res.Published, res.BridgeAcked, res.RawAcked, res.Lost, res.DeadLetters)
	}
	if res.BridgeSeconds <= 0 || res.RawSeconds <= 0 || res.RawRatio <= 0 {
		t.Errorf("bridge %.3fs, raw %.3fs, ratio %.2f: a rate is missing", res.BridgeSeconds, res.RawSeconds, res.RawRatio)
	}
	if n, err := srv.Client().Exists(ctx, res.Stream, res.Stream+":dead").Result(); err != nil || n != 0 {
		t.Errorf("the run's stream is still there after it: exists %d, %v", n, err)
	}
}

// TestIngestRefusesAStreamInUse: the scenario never writes into a stream
// that already exists, nor deletes it.
func TestIngestRefusesAStreamInUse(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := srv.Client()
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "notifications", Values: []any{"to", "*", "data", "1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := Run(ctx, Options{Scenario: "ingest", Prefill: 10, Stream: "notifications", RedisURL: srv.URL(), Binary: e2e.Binary})
	if err == nil || !strings.Contains(err.Error(), "must not exist") {
		t.Fatalf("err %v, want a refusal", err)
	}
	if n, _ := rdb.XLen(ctx, "notifications").Result(); n != 1 {
		t.Fatalf("notifications has %d entries, want the 1 it had", n)
	}
}

// TestCommandTakesTheIngestFlags: the subcommand's own flags reach Options
// (a bad scenario fails in validate, after the flags parsed).
func TestCommandTakesTheIngestFlags(t *testing.T) {
	var out, errOut strings.Builder
	err := Command([]string{"--scenario", "ingest", "--prefill", "0", "--retention", "1h", "--bridge-bin", "/nonexistent"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "prefill") {
		t.Fatalf("err %v (stderr %q), want the prefill check", err, errOut.String())
	}
}
