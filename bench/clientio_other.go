//go:build !linux

package bench

func newClientIO(int) clientIO { return &goroutineIO{} }
