package oci

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"peapod/internal/cgroupfs"
)

// Kill sends sig to the container's init process (`runtime kill`).
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	if err := validID(id); err != nil {
		return err
	}
	_, err := r.run(ctx, id, "kill", nil, "kill", id, strconv.Itoa(int(sig)))
	if err != nil && isNotExist(err) {
		return fmt.Errorf("%w: %w", err, ErrNotFound)
	}
	return err
}

// Stop sends sig (SIGTERM if 0), then SIGKILL once timeout has passed, and
// returns when the container has exited and conmon has recorded the exit. A
// container that already exited is success.
func (r *Runtime) Stop(ctx context.Context, id string, timeout time.Duration, sig syscall.Signal) error {
	if err := validID(id); err != nil {
		return err
	}
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	start := time.Now()
	m, err := r.arm(id)
	if err != nil {
		return err
	}
	if exited(m) {
		return nil
	}
	if timeout > 0 && sig != syscall.SIGKILL {
		if err := r.Kill(ctx, id, sig); err != nil && !isNotRunning(err) {
			return err
		}
		t := time.NewTimer(timeout)
		select {
		case <-m.done:
			t.Stop()
			klog.V(2).InfoS("Stopped container", "runtime", r.name, "id", id, "signal", sig, "duration", time.Since(start))
			return nil
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("container %s: stop: %w", id, ctx.Err())
		case <-t.C:
			klog.InfoS("Container did not stop in time, killing it", "runtime", r.name, "id", id, "signal", sig, "timeout", timeout)
		}
	}
	if err := r.Kill(ctx, id, syscall.SIGKILL); err != nil && !isNotRunning(err) {
		if exited(m) {
			return nil
		}
		return err
	}
	// SIGKILL cannot be caught; bound the wait anyway (e.g. D state).
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-m.done:
		klog.V(2).InfoS("Stopped container", "runtime", r.name, "id", id, "signal", syscall.SIGKILL, "duration", time.Since(start))
		return nil
	case <-ctx.Done():
		return fmt.Errorf("container %s: stop: %w", id, ctx.Err())
	case <-t.C:
		return fmt.Errorf("container %s: still running 30s after SIGKILL", id)
	}
}

func exited(m *monitor) bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// Delete runs `runtime delete --force` (which kills a live container), makes
// sure conmon is gone and removes the container's state dir. Deleting an
// unknown id is success.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	r.mu.Lock()
	if m := r.monitors[id]; m != nil {
		m.quiet.Store(true) // the caller is deleting it: no exit event
	}
	r.mu.Unlock()
	if _, err := r.run(ctx, id, "delete", nil, "delete", "--force", id); err != nil && !isNotExist(err) {
		return err
	}
	// conmon exits once it has reaped the container; give it a moment, then
	// kill it (verified by its command line to be this container's conmon).
	if !r.waitConmon(id, 2*time.Second) {
		if err := r.killConmon(id); err != nil {
			return err
		}
	}
	r.forget(id)
	if m, err := r.readMeta(id); err == nil && m.ConmonCgroup != "" {
		cgroupfs.Remove(m.ConmonCgroup) // conmon is gone: the cgroup is empty
	}
	if err := os.RemoveAll(r.dir(id)); err != nil {
		return fmt.Errorf("container %s: remove state: %w", id, err)
	}
	klog.V(2).InfoS("Deleted container", "runtime", r.name, "id", id)
	return nil
}

// killConmon SIGKILLs the container's conmon through a pidfd, so a recycled
// pid is never signalled.
func (r *Runtime) killConmon(id string) error {
	f, err := r.conmonPidfd(id)
	if err != nil || f == nil {
		return err
	}
	defer f.Close()
	klog.InfoS("Killing conmon", "runtime", r.name, "id", id)
	// conmon leads its own process group (it calls setsid), in which the
	// runtime it runs (a hung `runtime create`) is: the whole group goes,
	// or the runtime would outlive it.
	pid := pidOfPidfd(f)
	if pid > 0 && processGroupOf(pid) == pid {
		if err := unix.Kill(-pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("container %s: kill conmon's process group: %w", id, err)
		}
	} else if err := unix.PidfdSendSignal(int(f.Fd()), unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("container %s: kill conmon: %w", id, err)
	}
	fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
	_, _ = unix.Poll(fds, 2000)
	return nil
}

// bundleOf is the bundle path recorded at Create.
func (r *Runtime) bundleOf(id string) (string, error) {
	m, err := r.readMeta(id)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(m.Bundle) {
		return "", fmt.Errorf("container %s: bad bundle path %q", id, m.Bundle)
	}
	return m.Bundle, nil
}
