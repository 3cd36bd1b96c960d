// Package pidfd waits for processes through pidfds in Go's netpoller, so a
// watched process costs a parked goroutine, not a blocked thread.
package pidfd

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Wait blocks until the process behind f (a PIDFD_NONBLOCK pidfd) exits or
// f is closed.
func Wait(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	ready := func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return n > 0 || (err != nil && err != unix.EINTR)
	}
	if errors.Is(f.SetReadDeadline(time.Time{}), os.ErrNoDeadline) {
		// Not in the netpoller (should not happen for a non-blocking
		// pidfd): block one thread in poll instead.
		return rc.Control(func(fd uintptr) {
			for {
				fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
				if _, err := unix.Poll(fds, -1); err != unix.EINTR {
					return
				}
			}
		})
	}
	return rc.Read(ready)
}
