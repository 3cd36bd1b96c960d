// Package pause is the pod infra process: it holds the pod's namespaces open,
// reaps zombies when it is PID 1 of a shared PID namespace, and exits on
// SIGTERM or SIGINT. It imports nothing heavy on purpose: it runs once per
// pod, so every page it touches is paid for 110 times on a full node.
package pause

import (
	"os"
	"os/signal"
	"syscall"
)

// Run blocks until SIGTERM or SIGINT and returns the exit code. Without
// arguments it runs as it was started (inside an OCI runtime's container,
// e.g. as containerd's sandbox image); with -root DIR -user UID:GID
// [-groups G,...] it first confines itself (confine.go), as peapod starts
// it, and with -ready-fd N it reports "ok" or why it failed on fd N.
func Run(args []string) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	c, err := parseArgs(args)
	if err == nil && c != nil {
		err = c.apply()
	}
	if c != nil && c.readyFD > 0 {
		ready := os.NewFile(uintptr(c.readyFD), "ready")
		msg := "ok\n"
		if err != nil {
			msg = err.Error() + "\n"
		}
		ready.WriteString(msg)
		ready.Close()
	}
	if err != nil {
		os.Stderr.WriteString("pause: " + err.Error() + "\n")
		return 1
	}
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
			reap()
		default:
			return 0
		}
	}
	return 0
}

// reap collects every exited child; orphans of the pod re-parent to us when
// we are PID 1 of the pod's PID namespace.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
