//go:build linux

package wspool

// The pool's socket calls on Linux.
//
// Reads and writes of a job are raw system calls: the descriptors are
// non-blocking, so a call never waits, and the runtime's bookkeeping for a
// call that might (entersyscall/exitsyscall, which lets another goroutine
// have the P meanwhile) would only add to every delivery.

import (
	"math"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// iovMax is the most buffers one writev takes (the kernel's UIO_MAXIOV).
const iovMax = 1024

type iovecs = []unix.Iovec

func newIovecs() iovecs { return make([]unix.Iovec, 0, iovMax) }

// writev writes bufs to the non-blocking fd with as few writev calls as the
// kernel takes. It returns how many buffers were completed, the bytes
// written, and the unwritten rest (resliced, never copied); EAGAIN is not an
// error.
func (w *worker) writev(fd int, bufs [][]byte) (done, written int, rest [][]byte, err error) {
	for len(bufs) > 0 {
		k := min(len(bufs), iovMax)
		iov := w.iov[:0]
		want := 0
		for _, b := range bufs[:k] {
			if len(b) == 0 {
				continue
			}
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
			want += len(b)
		}
		n := 0
		if want > 0 {
			r, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			clear(iov) // drop references to the frames
			switch e {
			case 0:
				n = int(r)
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return done, written, bufs, nil
			default:
				return done, written, bufs, e
			}
		}
		written += n
		short := n < want
		for n > 0 || (len(bufs) > 0 && len(bufs[0]) == 0) {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
				done++
			} else {
				bufs[0] = bufs[0][n:]
				n = 0
			}
		}
		if short {
			return done, written, bufs, nil
		}
	}
	return done, written, nil, nil
}

// sysRead reads the non-blocking fd into p (len(p) > 0).
func sysRead(fd int32, p []byte) (int, syscall.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), e
}

// sysShutdownWrite half-closes the socket once our close frame is out.
func sysShutdownWrite(fd int32) { _ = unix.Shutdown(int(fd), unix.SHUT_WR) }

// sysClose closes fd; reset makes it an RST (SO_LINGER 0).
func sysClose(fd int32, reset bool) {
	if reset {
		_ = unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	_ = unix.Close(int(fd))
}

// dupSocket returns a close-on-exec duplicate of rc's descriptor; ok is
// false when there is none (nothing is left open then).
func dupSocket(rc syscall.RawConn) (fd int32, ok bool) {
	d, derr := -1, error(nil)
	if err := rc.Control(func(f uintptr) { d, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil || d < 0 || d > math.MaxInt32 {
		if d >= 0 {
			_ = unix.Close(d)
		}
		return -1, false
	}
	return int32(d), true
}
