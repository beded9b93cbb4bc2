// Package test holds the end-to-end tests: the real notifybridge binary, real
// redis-server processes and real WebSocket clients over loopback, through
// the shared harness in internal/e2e.
package test

import (
	"testing"

	"github.com/notifybridge/notifybridge/internal/e2e"
)

func TestMain(m *testing.M) { e2e.Main(m, "..") }
