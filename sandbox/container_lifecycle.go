package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/oci"
	"peapod/store"
)

// StartContainer starts a CREATED container.
func (m *Manager) StartContainer(ctx context.Context, id string) error {
	c, err := m.Container(id)
	if err != nil {
		return err
	}
	c.op.Lock()
	defer c.op.Unlock()
	rec := c.Record()
	if rec.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		return fmt.Errorf("%w: container %s is %s, not CREATED", ErrFailedPrecondion, rec.ID, stateName(rec.State))
	}
	sb, err := m.Sandbox(rec.SandboxID)
	if err != nil {
		return fmt.Errorf("%w: sandbox of container %s: %v", ErrFailedPrecondion, rec.ID, err)
	}
	rt, err := m.runtime(sb.Record().RuntimeHandler)
	if err != nil {
		return err
	}
	rctx, cancel := runtimeCtx(ctx)
	defer cancel()
	if err := rt.Start(rctx, rec.ID); err != nil {
		// A start that failed leaves the container EXITED with the reason, as
		// containerd does, so the kubelet sees why.
		_ = c.update(m.o.Store, func(r *ContainerRecord) error {
			r.State = runtimeapi.ContainerState_CONTAINER_EXITED
			r.FinishedAt = time.Now().UnixNano()
			r.ExitCode = 128
			r.Reason = "StartError"
			r.Message = err.Error()
			return nil
		})
		return fmt.Errorf("start container %s: %w", rec.ID, err)
	}
	if err := c.update(m.o.Store, func(r *ContainerRecord) error {
		if r.State == runtimeapi.ContainerState_CONTAINER_CREATED {
			r.State = runtimeapi.ContainerState_CONTAINER_RUNNING
		}
		if r.StartedAt == 0 {
			r.StartedAt = time.Now().UnixNano()
		}
		return nil
	}); err != nil {
		return err
	}
	m.emitContainer(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, c)
	// The process may have exited between start and here: conmon's exit
	// file says so. A later exit reaches HandleExit through the monitor,
	// so no `runtime state` here.
	_, _ = m.recordExit(ctx, c, false)
	m.observePodStart(sb)
	return nil
}

// StopContainer signals the container with its stop signal, then SIGKILL
// after timeout seconds. Stopping an exited or unknown container succeeds.
func (m *Manager) StopContainer(ctx context.Context, id string, timeout int64) error {
	c, err := m.Container(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	c.op.Lock()
	defer c.op.Unlock()
	rec := c.Record()
	if rec.State == runtimeapi.ContainerState_CONTAINER_EXITED {
		return nil
	}
	rt, err := m.containerRuntime(rec)
	if err != nil {
		return err
	}
	sig := stopSignal(rec.StopSignal)
	if err := rt.Stop(ctx, rec.ID, time.Duration(timeout)*time.Second, sig); err != nil && !isGone(err) {
		return fmt.Errorf("stop container %s: %w", rec.ID, err)
	}
	if err := m.refreshExit(ctx, c); err != nil {
		return fmt.Errorf("stop container %s: %w", rec.ID, err)
	}
	m.deleteExitedRuntime(ctx, c)
	if c.Record().State == runtimeapi.ContainerState_CONTAINER_CREATED {
		// Never started: nothing ran, but it is done.
		if err := c.update(m.o.Store, func(r *ContainerRecord) error {
			r.State = runtimeapi.ContainerState_CONTAINER_EXITED
			r.FinishedAt = time.Now().UnixNano()
			r.Reason = "Completed"
			return nil
		}); err != nil {
			return err
		}
		m.emitContainer(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, c)
	}
	return nil
}

// RemoveContainer kills the container if needed and removes it with its
// rootfs, bundle and record. Removing an unknown container succeeds.
func (m *Manager) RemoveContainer(ctx context.Context, id string) error {
	c, err := m.Container(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	c.op.Lock()
	defer c.op.Unlock()
	rec := c.Record()
	rt, err := m.containerRuntime(rec)
	if err != nil {
		return err
	}
	if !rec.RuntimeDeleted {
		if rec.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			if err := rt.Stop(ctx, rec.ID, 0, unix.SIGKILL); err != nil && !isGone(err) {
				return fmt.Errorf("remove container %s: kill: %w", rec.ID, err)
			}
		}
		if err := rt.Delete(ctx, rec.ID); err != nil && !isGone(err) {
			return fmt.Errorf("remove container %s: %w", rec.ID, err)
		}
	}
	stateDir := m.containerStateDir(rec.ID)
	if err := unmountAll(filepath.Join(stateDir, "rootfs")); err != nil {
		return fmt.Errorf("remove container %s: %w", rec.ID, err)
	}
	if err := m.o.Images.Release(ctx, rec.ID); err != nil {
		return fmt.Errorf("remove container %s: release image: %w", rec.ID, err)
	}
	// Image volumes stay mounted while the container exists, exited or
	// not (its image cannot be removed meanwhile); the last user's
	// removal unmounts each.
	if err := m.o.Images.ReleaseVolumes(ctx, rec.ID); err != nil {
		return fmt.Errorf("remove container %s: %w", rec.ID, err)
	}
	if err := os.RemoveAll(stateDir); err != nil {
		return fmt.Errorf("remove container %s: %w", rec.ID, err)
	}
	if err := os.RemoveAll(m.containerRootDir(rec.ID)); err != nil {
		return fmt.Errorf("remove container %s: %w", rec.ID, err)
	}
	if err := m.o.Store.Delete(store.BucketContainers, rec.ID); err != nil {
		return fmt.Errorf("remove container %s: %w", rec.ID, err)
	}
	m.mu.Lock()
	delete(m.containers, rec.ID)
	if m.names[rec.Name] == rec.ID {
		delete(m.names, rec.Name)
	}
	m.mu.Unlock()
	klog.V(2).InfoS("Container removed", "id", rec.ID)
	m.emitContainer(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, c)
	return nil
}

func (m *Manager) containerRuntime(rec ContainerRecord) (OCIRuntime, error) {
	sb, err := m.Sandbox(rec.SandboxID)
	if err != nil {
		return m.runtime("")
	}
	return m.runtime(sb.Record().RuntimeHandler)
}

// HandleExit is called when the runtime reports that process id exited:
// a container moves to EXITED; a sandbox whose pause died goes NOTREADY.
func (m *Manager) HandleExit(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c, err := m.Container(id); err == nil && c.ID() == id {
		m.refreshExit(ctx, c)
		// Free the runtime instance now, as containerd deletes a task on
		// its exit: off this goroutine (it serves every container's exits),
		// after whatever lifecycle call holds the container.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c.op.Lock()
			defer c.op.Unlock()
			m.deleteExitedRuntime(ctx, c)
		}()
		return
	}
	m.mu.RLock()
	sb, ok := m.sandboxes[id]
	m.mu.RUnlock()
	if ok {
		stopped := false
		if err := sb.update(m.o.Store, func(r *SandboxRecord) error {
			stopped = r.State == runtimeapi.PodSandboxState_SANDBOX_READY
			r.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
			return nil
		}); err != nil {
			// Still READY with its pause gone (unless removed meanwhile):
			// try again, as for a container's exit (refreshExit).
			if !errors.Is(err, ErrNotFound) {
				klog.ErrorS(err, "Cannot record that a pod sandbox's infra container exited; trying again", "id", id, "in", exitRetry)
				time.AfterFunc(exitRetry, func() { m.HandleExit(id) })
			}
			return
		}
		klog.InfoS("Pod sandbox infra container exited", "id", id)
		if stopped {
			m.emitSandbox(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, id)
		}
	}
}

// exitRetry is how soon an exit the store could not record (a full disk)
// is recorded again.
var exitRetry = 5 * time.Second

// refreshExit reads the runtime's view and records an exit if there was one.
// An exit it sees but cannot persist (the store's disk is full) is the
// error; it is then tried again every exitRetry through HandleExit, until
// recorded or the container removed: monitors report an exit once, and the
// container must not stay RUNNING for ever for one failed write.
func (m *Manager) refreshExit(ctx context.Context, c *Container) error {
	rec := c.Record()
	if rec.State == runtimeapi.ContainerState_CONTAINER_EXITED {
		return nil
	}
	exited, err := m.recordExit(ctx, c, false)
	if !exited && err == nil {
		_, err = m.recordExit(ctx, c, true)
	}
	if err != nil && c.exitRetry.CompareAndSwap(false, true) {
		klog.ErrorS(err, "Cannot record a container's exit; trying again", "id", rec.ID, "in", exitRetry)
		time.AfterFunc(exitRetry, func() {
			c.exitRetry.Store(false)
			m.HandleExit(rec.ID)
		})
	}
	return err
}

// recordExit records the container's exit if there was one: from conmon's
// exit file alone, or (full) from the runtime's state as well, which also
// catches a conmon that died without writing one. It reports whether the
// container is now EXITED; the error is an exit seen but not persisted.
func (m *Manager) recordExit(ctx context.Context, c *Container, full bool) (bool, error) {
	rec := c.Record()
	if rec.State == runtimeapi.ContainerState_CONTAINER_EXITED {
		return true, nil
	}
	rt, err := m.containerRuntime(rec)
	if err != nil {
		return false, nil
	}
	var st *oci.State
	if full {
		st, err = rt.State(ctx, rec.ID)
	} else {
		var ok bool
		if st, ok, err = rt.ExitRecorded(rec.ID); err == nil && !ok {
			return false, nil
		}
	}
	if err != nil {
		klog.V(2).InfoS("Container state unreadable", "id", rec.ID, "err", err)
		return false, nil
	}
	if st.Status != "stopped" {
		return false, nil
	}
	changed := false
	err = c.update(m.o.Store, func(r *ContainerRecord) error {
		if r.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			return nil
		}
		changed = true
		r.State = runtimeapi.ContainerState_CONTAINER_EXITED
		r.ExitCode = st.ExitCode
		r.FinishedAt = st.FinishedAt.UnixNano()
		if st.FinishedAt.IsZero() {
			r.FinishedAt = time.Now().UnixNano()
		}
		if r.StartedAt == 0 {
			r.StartedAt = r.FinishedAt
		}
		switch {
		case st.OOMKilled:
			r.Reason = "OOMKilled"
		case st.ExitCode == 0:
			r.Reason = "Completed"
		default:
			r.Reason = "Error"
		}
		if st.Message != "" {
			// Why the exit code is what it is (e.g. nobody recorded it:
			// conmon died first): ContainerStatus.message.
			r.Message = st.Message
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if changed {
		klog.V(2).InfoS("Container exited", "id", rec.ID, "exitCode", st.ExitCode, "oomKilled", st.OOMKilled)
		m.emitContainer(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, c)
	}
	return true, nil
}

// deleteExitedRuntime deletes an EXITED container's OCI runtime instance
// (`runtime delete`, conmon's dir, its cgroup), unmounts its rootfs and
// marks the record, so
// RemoveContainer later only removes peapod's own files. The caller holds
// c.op. A failure is logged: RemoveContainer deletes it then.
func (m *Manager) deleteExitedRuntime(ctx context.Context, c *Container) {
	rec := c.Record()
	if rec.State != runtimeapi.ContainerState_CONTAINER_EXITED || rec.RuntimeDeleted {
		return
	}
	m.mu.RLock()
	_, known := m.containers[rec.ID]
	m.mu.RUnlock()
	if !known { // removed meanwhile
		return
	}
	rt, err := m.containerRuntime(rec)
	if err != nil {
		return
	}
	if err := rt.Delete(ctx, rec.ID); err != nil && !isGone(err) {
		klog.V(2).InfoS("Deleting exited container's runtime state", "id", rec.ID, "err", err)
		return
	}
	// Its rootfs too, as containerd's shim unmounts it at task delete:
	// nothing enters an exited container. The writable layer stays until
	// RemoveContainer.
	unmounted := unmountAll(filepath.Join(m.containerStateDir(rec.ID), "rootfs")) == nil
	_ = c.update(m.o.Store, func(r *ContainerRecord) error {
		r.RuntimeDeleted = true
		if unmounted {
			r.Mounted = false
		}
		return nil
	})
}

func stopSignal(name string) syscall.Signal {
	if name == "" {
		return unix.SIGTERM
	}
	if s := unix.SignalNum(name); s != 0 {
		return s
	}
	if s := unix.SignalNum("SIG" + name); s != 0 {
		return s
	}
	var n int
	if _, err := fmt.Sscanf(name, "%d", &n); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n)
	}
	return unix.SIGTERM
}

func stateName(s runtimeapi.ContainerState) string {
	return runtimeapi.ContainerState_name[int32(s)]
}
