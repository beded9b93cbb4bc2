//go:build !linux

package wspool

// Other systems: the pool is built on epoll, so New fails with
// errNeedsEpoll and nothing below is ever reached. It exists so that the
// module (and whatever imports this package) compiles everywhere.

import (
	"errors"
	"runtime"
	"syscall"
)

var errNeedsEpoll = errors.New("wspool: needs Linux epoll, not available on " + runtime.GOOS)

type poller struct{}

func newPoller() (*poller, error) { return nil, errNeedsEpoll }

func (*poller) add(*Conn) error   { return errNeedsEpoll }
func (*poller) remove(*Conn)      {}
func (*poller) snapshot() []*Conn { return nil }
func (*poller) wakeup()           {}
func (*poller) run() error        { return errNeedsEpoll }
func (*poller) close()            {}

type iovecs struct{}

func newIovecs() iovecs { return iovecs{} }

func (*worker) writev(_ int, bufs [][]byte) (done, written int, rest [][]byte, err error) {
	return 0, 0, bufs, errNeedsEpoll
}

func sysRead(int32, []byte) (int, syscall.Errno) { return 0, syscall.EINVAL }
func sysShutdownWrite(int32)                     {}
func sysClose(int32, bool)                       {}
func dupSocket(syscall.RawConn) (int32, bool)    { return -1, false }
