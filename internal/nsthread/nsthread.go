// Package nsthread runs work on an OS thread that may change its own
// namespaces (unshare, setns) without any other goroutine ever running in
// them: the thread is locked for the work and moved back afterwards. A
// thread that cannot move back stays locked, so the Go runtime ends it when
// the goroutine returns (unless it is the main thread, which Go parks
// forever instead; its namespaces are what /proc/self shows, so moving
// back is not optional). The runtime never clones new threads from a
// locked one.
package nsthread

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

var kindNames = []struct {
	kind int
	name string
}{{unix.CLONE_NEWNET, "net"}, {unix.CLONE_NEWIPC, "ipc"}, {unix.CLONE_NEWUTS, "uts"}}

// Run runs fn on a locked OS thread whose namespaces of the given kinds
// (CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS, or'ed) are remembered first
// and restored after fn, whatever fn did to them.
func Run(kinds int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var orig []*os.File
		var origKinds []int
		defer func() {
			for _, f := range orig {
				f.Close()
			}
		}()
		for _, k := range kindNames {
			if kinds&k.kind == 0 {
				continue
			}
			f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/%s", unix.Gettid(), k.name))
			if err != nil {
				runtime.UnlockOSThread() // nothing changed yet
				errc <- err
				return
			}
			orig = append(orig, f)
			origKinds = append(origKinds, k.kind)
		}
		ferr := fn()
		restored := true
		for i, f := range orig {
			if err := unix.Setns(int(f.Fd()), origKinds[i]); err != nil {
				restored = false
			}
		}
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}
