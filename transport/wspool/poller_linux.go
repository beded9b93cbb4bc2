//go:build linux

package wspool

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// poller is our own epoll instance. Every connection's original descriptor
// is registered once, edge-triggered, for EPOLLIN|EPOLLRDHUP|EPOLLOUT:
//
//   - edge-triggered rather than one-shot because a connection never has to
//     be re-armed: an idle connection costs no syscall, and a drainer that
//     hits EAGAIN does not need an epoll_ctl to ask for EPOLLOUT (the next
//     edge after the full buffer drains is delivered anyway). The price is
//     that a reader must read until EAGAIN or reschedule itself, which the
//     worker does.
//   - EPOLLOUT is always in the mask; for a connection with nothing pending
//     an EPOLLOUT edge only costs a no-op pass.
//
// The loop only sorts events into a connection's state bits and schedules
// it; it never reads, writes or blocks on anything but epoll_wait.
type poller struct {
	epfd int
	evfd int // eventfd that wakes the loop for shutdown

	mu sync.RWMutex
	// conns is indexed by descriptor: fds are small dense ints (bounded by
	// the process's open-file limit), so a slice costs one pointer per fd
	// and no map buckets per connection. Guarded by mu.
	conns []*Conn
}

const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLOUT | unix.EPOLLET

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	return &poller{epfd: epfd, evfd: evfd}, nil
}

// add registers c. The slot is filled before epoll_ctl so the first edge
// finds it.
func (p *poller) add(c *Conn) error {
	p.mu.Lock()
	if i := int(c.fd); i >= len(p.conns) {
		// Growing by half keeps it amortized with little slack; the slice
		// never shrinks, which costs one pointer per descriptor number the
		// process ever used.
		grown := make([]*Conn, max(i+1, len(p.conns)+len(p.conns)/2, 64))
		copy(grown, p.conns)
		p.conns = grown
	}
	p.conns[c.fd] = c
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: pollEvents, Fd: c.fd}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(c.fd), &ev); err != nil {
		p.mu.Lock()
		if p.conns[c.fd] == c {
			p.conns[c.fd] = nil
		}
		p.mu.Unlock()
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

// get returns the connection registered for fd, or nil; mu is held.
func (p *poller) get(fd int32) *Conn {
	if fd < 0 || int(fd) >= len(p.conns) {
		return nil
	}
	return p.conns[fd]
}

// remove unregisters c before its descriptor is closed. An event for the fd
// that epoll_wait already returned may still be sorted afterwards; if the fd
// was reused by then it reaches the new connection as a spurious wakeup,
// which every handler tolerates (it reads or writes until EAGAIN).
func (p *poller) remove(c *Conn) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(c.fd), nil)
	p.mu.Lock()
	if p.get(c.fd) == c {
		p.conns[c.fd] = nil
	}
	p.mu.Unlock()
}

func (p *poller) snapshot() []*Conn {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []*Conn
	for _, c := range p.conns {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// wakeup makes run return.
func (p *poller) wakeup() {
	var one = [8]byte{1}
	_, _ = unix.Write(p.evfd, one[:])
}

// run is the poll loop; it returns nil after wakeup, or why epoll_wait
// failed: then no connection gets another readiness edge, and the caller
// fails the pool.
func (p *poller) run() error {
	var events [256]unix.EpollEvent
	for {
		n, err := unix.EpollWait(p.epfd, events[:], -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("epoll_wait: %w", err)
		}
		p.mu.RLock()
		for i := 0; i < n; i++ {
			ev := &events[i]
			if ev.Fd == -1 {
				p.mu.RUnlock()
				return nil
			}
			c := p.get(ev.Fd)
			if c == nil {
				continue
			}
			var bits uint32
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				bits |= stRead
			}
			if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				bits |= stWrite
			}
			c.schedule(bits)
		}
		p.mu.RUnlock()
	}
}

func (p *poller) close() {
	unix.Close(p.epfd)
	unix.Close(p.evfd)
}
