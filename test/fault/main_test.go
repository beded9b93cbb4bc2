// Package fault proves notifybridge's reliability against real processes:
// node crashes, Redis outages, Sentinel failover, Redis Cluster, many nodes
// with clients moving between them, hostile input and configured limits. It
// runs in a short form in CI; NB_LONG=1 runs the long form whose figures are
// recorded in docs/reliability.md.
package fault

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
)

func TestMain(m *testing.M) {
	// The tests' own clients see Redis go away on purpose; their
	// reconnection chatter would bury the failure reports.
	redis.SetLogger(quiet{})
	e2e.Main(m, "../..")
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// long reports whether the long form was asked for (NB_LONG=1).
func long() bool { return os.Getenv("NB_LONG") == "1" }

// pick returns the short or the long value.
func pick[T any](short, longForm T) T {
	if long() {
		return longForm
	}
	return short
}
