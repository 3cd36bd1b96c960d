package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/internal/cgroupfs"
	"peapod/oci"
	"peapod/store"
)

// StopSandbox stops every container of the pod, then the pause, tears the
// network down and unmounts. It is idempotent: a stopped sandbox, one whose
// netns vanished, or an unknown id all succeed; CNI DEL still runs until it
// has once succeeded, so the IP is freed.
func (m *Manager) StopSandbox(ctx context.Context, id string) error {
	sb, err := m.Sandbox(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	if sb.isRemoved() { // by a call that held op before us
		return nil
	}
	return m.stopSandboxLocked(ctx, sb)
}

func (m *Manager) stopSandboxLocked(ctx context.Context, sb *Sandbox) error {
	id := sb.rec.ID
	for _, c := range m.containersOf(id) {
		if err := m.StopContainer(ctx, c.rec.ID, 0); err != nil {
			return fmt.Errorf("stop sandbox %s: %w", id, err)
		}
	}
	if err := m.stopPause(ctx, sb); err != nil {
		return fmt.Errorf("stop sandbox %s: pause: %w", id, err)
	}
	// One STOPPED event per sandbox: from here, or from HandleExit when the
	// pause's exit was noticed first.
	stopped := false
	if err := sb.update(m.o.Store, func(r *SandboxRecord) error {
		stopped = r.State == runtimeapi.PodSandboxState_SANDBOX_READY
		r.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		return nil
	}); err != nil {
		return err
	}
	rec := sb.Record()
	if rec.NetNS != "" && !rec.NetworkDown {
		if err := m.o.Network.Teardown(ctx, m.networkPod(sb)); err != nil {
			return fmt.Errorf("stop sandbox %s: CNI DEL: %w", id, err)
		}
		if err := m.o.Network.RemoveNetNS(rec.NetNS); err != nil {
			return fmt.Errorf("stop sandbox %s: %w", id, err)
		}
		if err := sb.update(m.o.Store, func(r *SandboxRecord) error { r.NetworkDown = true; return nil }); err != nil {
			return err
		}
	}
	if rec.ShmMounted {
		if err := unmountAll(filepath.Join(m.sandboxStateDir(id), "shm")); err != nil {
			return fmt.Errorf("stop sandbox %s: %w", id, err)
		}
		if err := sb.update(m.o.Store, func(r *SandboxRecord) error { r.ShmMounted = false; return nil }); err != nil {
			return err
		}
	}
	klog.V(2).InfoS("Pod sandbox stopped", "id", id)
	if stopped {
		m.emitSandbox(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, id)
	}
	return nil
}

// RemoveSandbox stops the sandbox if needed and removes it with all its
// containers. An unknown id is not an error.
func (m *Manager) RemoveSandbox(ctx context.Context, id string) error {
	sb, err := m.Sandbox(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	if sb.isRemoved() { // by a call that held op before us
		return nil
	}
	id = sb.rec.ID
	if err := m.stopSandboxLocked(ctx, sb); err != nil {
		return err
	}
	for _, c := range m.containersOf(id) {
		if err := m.RemoveContainer(ctx, c.rec.ID); err != nil {
			return fmt.Errorf("remove sandbox %s: %w", id, err)
		}
	}
	m.removePodCgroup(sb)
	dir := m.sandboxStateDir(id)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	// Under sb.wmu, so a late exit notification cannot write it back.
	sb.wmu.Lock()
	err = m.o.Store.Delete(store.BucketSandboxes, id)
	sb.mu.Lock()
	sb.removed = err == nil
	sb.mu.Unlock()
	sb.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	m.mu.Lock()
	delete(m.sandboxes, id)
	if m.names[sb.rec.Name] == id {
		delete(m.names, sb.rec.Name)
	}
	m.mu.Unlock()
	klog.V(2).InfoS("Pod sandbox removed", "id", id)
	m.emitSandbox(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, id)
	return nil
}

// isGone reports an error that only says the process or container is
// already gone, which stop and remove treat as done.
func isGone(err error) bool {
	return errors.Is(err, oci.ErrNotFound) || errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH)
}

// removePodCgroup removes the pod-level cgroup peapod made under its default
// parent. A parent the caller named (the kubelet's /kubepods/...) belongs to
// the caller. Best effort: a busy cgroup stays and is logged.
func (m *Manager) removePodCgroup(sb *Sandbox) {
	if sb.Config().GetLinux().GetCgroupParent() != "" {
		return
	}
	cgroupfs.Remove(sb.Record().CgroupParent)
}
