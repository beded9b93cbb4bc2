//go:build !linux

package bench

import "sync/atomic"

func newClientIO(_ int, phase *atomic.Int32) clientIO { return newGoroutineIO(phase) }
