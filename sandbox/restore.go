package sandbox

import (
	"context"
	"os"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/store"
)

// restore rebuilds memory from the store after a (possibly unclean) start.
//
// Assumptions, as containerd's restart.go writes them down:
//   - conmon outlives peapod, so a container that was running may still be;
//     the runtime's state plus conmon's exit file say which.
//   - a container that exited while peapod was down has its exit code in
//     conmon's exit file; it is recorded now.
//   - the pause is not our child any more (it re-parented to init); a
//     sandbox whose pause still runs (same pid, same start time) stays
//     READY, so a kubelet does not recreate the pod; one whose pause is gone
//     is NOTREADY.
//   - a record whose runtime state is unreadable is kept (UNKNOWN for
//     containers) so that stop and remove can still clean it up.
//   - image volumes are counted from the image store's holders, one per
//     (container, image): a container with a record keeps its mounts (made
//     again if a reboot took them), any other holder is dropped, and an
//     image nothing holds is unmounted (image/volume.go).
func (m *Manager) restore(ctx context.Context) error {
	err := store.List(m.o.Store, store.BucketSandboxes, func(key string, rec *SandboxRecord) error {
		sb, err := newSandbox(*rec)
		if err != nil {
			klog.ErrorS(err, "Skipping unreadable sandbox record", "id", key)
			return nil
		}
		m.sandboxes[rec.ID] = sb
		m.names[rec.Name] = rec.ID
		return nil
	})
	if err != nil {
		return err
	}
	recorded := map[string]bool{}
	err = store.List(m.o.Store, store.BucketContainers, func(key string, rec *ContainerRecord) error {
		recorded[key] = true
		c, err := newContainer(*rec)
		if err != nil {
			klog.ErrorS(err, "Skipping unreadable container record", "id", key)
			return nil
		}
		m.containers[rec.ID] = c
		m.names[rec.Name] = rec.ID
		return nil
	})
	if err != nil {
		return err
	}
	for _, sb := range m.sandboxes {
		m.restoreSandbox(ctx, sb)
	}
	for _, c := range m.containers {
		m.restoreContainer(ctx, c)
	}
	if m.o.Images != nil {
		// Every container with a record keeps its image volumes (an
		// unreadable record too: its runtime may still run); holds of
		// containers never recorded (a crash inside CreateContainer) go.
		if err := m.o.Images.ReconcileVolumes(ctx, func(id string) bool { return recorded[id] }); err != nil {
			klog.ErrorS(err, "Image volumes not fully reconciled")
		}
	}
	klog.InfoS("Restored state", "sandboxes", len(m.sandboxes), "containers", len(m.containers))
	return nil
}

func (m *Manager) restoreSandbox(ctx context.Context, sb *Sandbox) {
	rec := sb.Record()
	ready := m.adoptPause(ctx, sb) && rec.State == runtimeapi.PodSandboxState_SANDBOX_READY
	if rec.NetNS != "" && !rec.NetworkDown {
		if _, err := os.Stat(rec.NetNS); err != nil {
			ready = false
		}
	}
	if !ready && rec.State == runtimeapi.PodSandboxState_SANDBOX_READY {
		_ = sb.update(m.o.Store, func(r *SandboxRecord) error {
			r.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
			return nil
		})
		klog.InfoS("Sandbox no longer ready after restart", "id", rec.ID)
	}
}

func (m *Manager) restoreContainer(ctx context.Context, c *Container) {
	rec := c.Record()
	if rec.State == runtimeapi.ContainerState_CONTAINER_EXITED {
		return
	}
	rt, err := m.containerRuntime(rec)
	if err != nil {
		return
	}
	st, err := rt.State(ctx, rec.ID)
	if err != nil {
		klog.InfoS("Container state unknown after restart", "id", rec.ID, "err", err)
		_ = c.update(m.o.Store, func(r *ContainerRecord) error {
			r.State = runtimeapi.ContainerState_CONTAINER_UNKNOWN
			return nil
		})
		return
	}
	switch st.Status {
	case "stopped":
		m.refreshExit(ctx, c)
	case "running", "created":
		if err := rt.Watch(rec.ID); err != nil {
			klog.ErrorS(err, "Cannot watch container", "id", rec.ID)
		}
		if st.Status == "running" && rec.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			_ = c.update(m.o.Store, func(r *ContainerRecord) error {
				r.State = runtimeapi.ContainerState_CONTAINER_RUNNING
				return nil
			})
		}
	}
}
