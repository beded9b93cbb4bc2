//go:build !linux

package wspool

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/notifybridge/notifybridge/bridge"
)

func TestNewNeedsEpoll(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{
		Listener:     ln,
		Auth:         NewNoneAuthenticator(),
		ValidateName: bridge.ValidateName,
		Accept:       func(*Request) (Source, error) { return &testSource{}, nil },
	})
	if !errors.Is(err, errNeedsEpoll) || !strings.Contains(err.Error(), "needs Linux epoll") {
		t.Fatalf("New: %v", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("listener left open: %v", err)
	}
}
