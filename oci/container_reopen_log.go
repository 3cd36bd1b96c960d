package oci

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// reopenLogTimeout bounds ReopenLog when ctx has no earlier deadline.
const reopenLogTimeout = 5 * time.Second

// ReopenLog asks conmon to reopen the container's log file (after the caller
// rotated it) by writing "2 0 0\n" to conmon's ctl fifo, as CRI-O does, and
// waits until the new file exists. conmon writes the new file as
// <log>.tmp and renames it over <log>, so the wait is for the log path to
// name a different inode than before.
//
// It never hangs: the fifo is opened non-blocking (ENXIO at once when conmon
// is gone), and the wait ends at ctx's deadline, after reopenLogTimeout, or
// when conmon exits.
func (r *Runtime) ReopenLog(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	m, err := r.readMeta(id)
	if err != nil {
		return err
	}
	var before uint64
	if fi, err := os.Stat(m.LogPath); err == nil {
		before = fi.Sys().(*syscall.Stat_t).Ino
	}
	if err := writeCtl(m.Bundle, "2 0 0\n"); err != nil {
		return fmt.Errorf("container %s: reopen log: %w", id, err)
	}

	ctx, cancel := context.WithTimeout(ctx, reopenLogTimeout)
	defer cancel()
	r.mu.Lock()
	mon := r.monitors[id]
	r.mu.Unlock()
	var conmonDone <-chan struct{}
	if mon != nil {
		conmonDone = mon.done
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if fi, err := os.Stat(m.LogPath); err == nil && fi.Sys().(*syscall.Stat_t).Ino != before {
			klog.V(2).InfoS("Reopened container log", "runtime", r.name, "id", id, "path", m.LogPath)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("container %s: reopen log: conmon did not reopen %s: %w", id, m.LogPath, ctx.Err())
		case <-conmonDone:
			conmonDone = nil // one last look at the file, then fail
			if fi, err := os.Stat(m.LogPath); err == nil && fi.Sys().(*syscall.Stat_t).Ino != before {
				return nil
			}
			return fmt.Errorf("container %s: reopen log: conmon exited", id)
		case <-tick.C:
		}
	}
}
