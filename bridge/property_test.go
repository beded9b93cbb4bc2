package bridge_test

import (
	"math/rand/v2"
	"testing"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/bridge/bridgetest"
)

// TestPropertyHub runs bridgetest's property schedules over the in-memory
// stream (handlers' TestPropertyRedis runs the same over a real
// redis-server). BRIDGE_PROP_SEED=<n> replays one schedule; BRIDGE_PROP_N
// sets the count.
func TestPropertyHub(t *testing.T) {
	bridgetest.Run(t, bridgetest.Options{
		N: 3000,
		NewBackend: func(_ testing.TB, rnd *rand.Rand) bridgetest.Backend {
			return bridge.NewMemBackend(rnd)
		},
		Describe:      bridge.CursorDebug,
		RequestCursor: bridge.RequestCursor,
	})
}
