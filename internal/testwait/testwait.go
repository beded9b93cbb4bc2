// Package testwait holds the bounded waits every test suite uses: poll a
// condition until a deadline (never a bare sleep), and a context that ends
// with the test.
package testwait

import (
	"context"
	"testing"
	"time"
)

// For polls cond every 10 ms until it returns nil, or fails the test with
// what and the last error once timeout has passed.
func For(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Context is cancelled when the test ends, or after 60 s at the latest.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
