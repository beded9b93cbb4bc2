package streams

import (
	"strings"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/config"
)

// A field the node fills from a setting defaults, when zero, to that
// setting's documented default: a library user (bench, tests, other services)
// gets the number the README states, not a second opinion.
func TestDefaultsAreTheSettings(t *testing.T) {
	doc := config.Default()
	var c Config
	c.setDefaults()
	for _, p := range []struct {
		setting   string
		got, want any
	}{
		{"ingest_batch", c.BatchSize, doc.IngestBatch.N},
		{"ingest_batch (acks)", c.AckBatch, doc.IngestBatch.N},
		{"ingest_block", c.Block, doc.IngestBlock.Duration},
		{"ack_interval", c.AckInterval, doc.AckInterval.Duration},
		{"redis_retry_backoff", c.RetryBackoffMax, doc.RedisRetryBackoff.Duration},
		{"shutdown_timeout", c.CloseTimeout, doc.ShutdownTimeout.Duration},
	} {
		if p.got != p.want {
			t.Errorf("%s: zero Config means %v, the documented default is %v", p.setting, p.got, p.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if _, err := NewSubscriber(nil, Config{}); err == nil {
		t.Fatal("empty config accepted")
	}
	cfg := Config{Stream: "s", Group: "g", Consumer: "c", BatchSize: -1}
	if _, err := NewSubscriber(nil, cfg); err == nil || err.Error() != "ingest_batch: must be > 0, got -1" {
		t.Fatalf("got %v", err)
	}
	// Every bad setting at once, each named as users write it.
	cfg = Config{Stream: "s", Group: "g", Consumer: "c", BatchSize: -1, Block: time.Microsecond,
		AckInterval: -1, RetryBackoffMax: -1, CloseTimeout: -1, NackBackoff: time.Second, NackBackoffMax: time.Millisecond}
	cfg.setDefaults()
	err := cfg.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	var names []string
	for _, line := range strings.Split(err.Error(), "\n") {
		name, _, _ := strings.Cut(line, ":")
		names = append(names, name)
	}
	want := "ingest_batch ingest_block ack_interval nack_backoff_max redis_retry_backoff shutdown_timeout"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("settings named %q, want %q (from %v)", got, want, err)
	}
}
