//go:build linux

package wspool

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// A job that sees Drain's close request before its stDrain bit (Drain sets
// them one after the other while the job may be writing) still writes what
// the source has ready before the 1001.
func TestDrainRequestBeforeItsBit(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	s := &Server{timers: newTimers()}
	s.cfg.setDefaults()
	src := &testSource{}
	src.push(textFrame("a"), textFrame("b"))
	c := &Conn{s: s, src: src, fd: int32(fds[0]), tIdx: -1}
	c.closeReq.Store(closeGoingAway) // and no stDrain yet: c.draining is false
	if !c.flush(newWorker(), true, 0) {
		t.Fatal("torn down")
	}
	got := make([]byte, 256)
	n, err := unix.Read(fds[1], got)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(textFrame("a"), textFrame("b")...), closeGoingAway.frame...)
	if !bytes.Equal(got[:n], want) {
		t.Fatalf("wrote % x, want % x", got[:n], want)
	}
	s.timers.remove(c)
}
