package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/sandbox/infra"
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
//   - RunPodSandbox and CreateContainer record some of what they make
//     only after making it: a crash in between leaves things no record
//     names. They are found here by where they are and stopped or
//     removed, or they would stay for ever (found by the soak, TestSoak):
//     a pause is recorded once RunPodSandbox is done with it; every pause
//     of this peapod has this state dir's pause root as its -root (or as
//     its root, once confined), and one no sandbox adopted is stopped
//     (stopOrphanPauses), which frees its pod's cgroups. A sandbox's netns
//     pin (<netns dir>/peapod-<id>) and /dev/shm mount come before the
//     record names them: those of a sandbox not ready whose record names
//     none are removed (settleUnrecordedSandbox; CNI ADD only runs once
//     the netns is recorded, so no CNI DEL is owed). A container's dirs
//     and rootfs mount come before its record: those of ids without one
//     are unmounted and removed (removeUnrecordedContainers), and their
//     image holds go with the image volumes' (below).
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
	m.stopOrphanPauses()
	for _, sb := range m.sandboxes {
		m.settleUnrecordedSandbox(sb)
	}
	m.removeUnrecordedContainers(recorded)
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

// stopOrphanPauses stops every pause of this peapod that no sandbox
// adopted: one started by a RunPodSandbox that a crash cut short before it
// recorded the pause.
func (m *Manager) stopOrphanPauses() {
	adopted := map[int]bool{}
	for _, sb := range m.sandboxes {
		if p := sb.pauseProcess(); p != nil {
			adopted[p.Pid] = true
		}
		if rec := sb.Record(); rec.PausePid > 0 {
			adopted[rec.PausePid] = true
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		klog.ErrorS(err, "Cannot look for pause processes left by a crash")
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || adopted[pid] || !m.isOurPause(pid) {
			continue
		}
		st, err := infra.StartTimeOf(pid)
		if err != nil {
			continue
		}
		p, err := infra.Adopt(pid, st)
		if err != nil {
			continue // gone meanwhile
		}
		klog.InfoS("Stopping a pause no sandbox recorded (RunPodSandbox cut short by a crash)", "pid", pid)
		if err := p.Stop(pauseStopTimeout); err != nil {
			klog.ErrorS(err, "Cannot stop an orphaned pause", "pid", pid)
		}
	}
}

// isOurPause reports whether pid is a pause this peapod started: its
// -root argument is this state dir's pause root (given as a path, or as
// an inherited fd), or its root already is (it chroots there).
func (m *Manager) isOurPause(pid int) bool {
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	cmdline, err := os.ReadFile(filepath.Join(proc, "cmdline"))
	if err != nil {
		return false
	}
	argv := strings.Split(string(cmdline), "\x00")
	root := ""
	for i := 1; i+1 < len(argv); i++ {
		if argv[i] == "-root" {
			root = argv[i+1]
			break
		}
	}
	if root == "" {
		return false
	}
	if fd, ok := strings.CutPrefix(root, "/proc/self/fd/"); ok {
		root, _ = os.Readlink(filepath.Join(proc, "fd", fd))
	}
	if root == m.pauseRoot() {
		return true
	}
	chroot, _ := os.Readlink(filepath.Join(proc, "root"))
	return chroot == m.pauseRoot()
}

// settleUnrecordedSandbox removes the netns pin and /dev/shm mount of a
// sandbox that is not ready and whose record does not name them (a
// RunPodSandbox cut short between making and recording them). Both calls
// are no-ops when there is nothing.
func (m *Manager) settleUnrecordedSandbox(sb *Sandbox) {
	rec := sb.Record()
	if rec.State == runtimeapi.PodSandboxState_SANDBOX_READY {
		return
	}
	if rec.NetNS == "" && m.o.Network != nil {
		pin := m.o.Network.NetNSPath("peapod-" + rec.ID)
		if _, err := os.Lstat(pin); err == nil {
			klog.InfoS("Removing the netns of a sandbox cut short by a crash", "id", rec.ID, "netns", pin)
			if err := m.o.Network.RemoveNetNS(pin); err != nil {
				klog.ErrorS(err, "Cannot remove the netns of a sandbox cut short", "id", rec.ID)
			}
		}
	}
	if shm := filepath.Join(m.sandboxStateDir(rec.ID), "shm"); !rec.ShmMounted && isMountPoint(shm) {
		klog.InfoS("Unmounting /dev/shm of a sandbox cut short by a crash", "id", rec.ID)
		if err := unmountAll(shm); err != nil {
			klog.ErrorS(err, "Cannot unmount /dev/shm of a sandbox cut short", "id", rec.ID)
		}
	}
}

// isMountPoint reports whether path is on another device than its parent.
func isMountPoint(path string) bool {
	var st, parent unix.Stat_t
	if unix.Lstat(path, &st) != nil || unix.Lstat(filepath.Dir(path), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// removeUnrecordedContainers unmounts and removes the dirs of containers
// that have no record (a CreateContainer cut short before it wrote one;
// the OCI runtime never ran for them: the record comes first).
func (m *Manager) removeUnrecordedContainers(recorded map[string]bool) {
	for _, parent := range []string{filepath.Join(m.o.State, "containers"), filepath.Join(m.o.Root, "containers")} {
		entries, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, e := range entries {
			id := e.Name()
			if recorded[id] || !e.IsDir() {
				continue
			}
			klog.InfoS("Removing the dirs of a container never recorded (CreateContainer cut short by a crash)", "id", id)
			if err := unmountAll(filepath.Join(m.containerStateDir(id), "rootfs")); err != nil {
				klog.ErrorS(err, "Cannot unmount the rootfs of an unrecorded container", "id", id)
				continue
			}
			if err := os.RemoveAll(filepath.Join(parent, id)); err != nil {
				klog.ErrorS(err, "Cannot remove the dirs of an unrecorded container", "id", id)
			}
		}
	}
}
