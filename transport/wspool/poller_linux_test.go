//go:build linux

package wspool

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifybridge/notifybridge/bridge"
)

// A poll loop that stops on an error fails the pool: Err says why, and new
// handshakes are refused with it.
func TestPollerErrorFailsPool(t *testing.T) {
	s, err := New(Config{
		Listen:       "127.0.0.1:0",
		Auth:         NewNoneAuthenticator(),
		ValidateName: bridge.ValidateName,
		Accept:       func(*Request) (Source, error) { return &testSource{}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	// epoll_wait on a descriptor that is not an epoll instance fails at
	// once (EINVAL). Close closes the stand-in; the test, the real one.
	bad, err := unix.Dup(s.poller.evfd)
	if err != nil {
		t.Fatal(err)
	}
	real := s.poller.epfd
	s.poller.epfd = bad
	defer unix.Close(real)
	if err := s.Err(); err != nil {
		t.Fatalf("Err before Start: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eventually(t, 5*time.Second, func() error {
		if s.Err() == nil {
			return errors.New("Err still nil")
		}
		return nil
	})
	err = s.Err()
	if !errors.Is(err, ErrPollerStopped) || !errors.Is(err, unix.EINVAL) || !strings.HasPrefix(err.Error(), "poller stopped: epoll_wait: ") {
		t.Fatalf("Err: %v", err)
	}
	checkRefused(t, dialWS(t, s.Addr().String(), "/ws?user=a"), 503, "poller stopped")
}

// The poll loop returns nil when woken for Close.
func TestPollerWakeupReturnsNil(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	done := make(chan error, 1)
	go func() { done <- p.run() }()
	p.wakeup()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after wakeup")
	}
}
