//go:build !windows

package bench

import "syscall"

// setRcvBuf sets a socket's receive buffer before it connects.
func setRcvBuf(fd uintptr, bytes int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, bytes)
}
