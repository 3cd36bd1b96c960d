package lxcfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Target is a container's process, whose mount namespace Sync changes.
type Target struct {
	Pid int
	// Cgroup is the container's cgroupfs path; the process must be in it
	// (or below), which tells the container's process from one that got
	// its pid after it exited.
	Cgroup string
}

// Mounts reads the target's mount table.
func (t Target) Mounts() ([]Mount, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", t.Pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMountinfo(f)
}

// verify checks that pid is still the container's process.
func (t Target) verify() error {
	if t.Cgroup == "" {
		return nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", t.Pid))
	if err != nil {
		return err
	}
	want := filepath.Clean(t.Cgroup)
	for _, line := range bytes.Split(data, []byte("\n")) {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(string(line), ":", 3)
		if len(parts) == 3 && (parts[2] == want || strings.HasPrefix(parts[2], want+"/")) {
			return nil
		}
	}
	return fmt.Errorf("pid %d is not in cgroup %s (the container's process exited)", t.Pid, t.Cgroup)
}

// mountAttrs are the flags of every lxcfs bind, as the spec's binds get
// them at create: the files are read-only anyway.
const mountAttrs = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC

// Sync carries out plan in the target's mount namespace, with lxcfs
// mounted at dir in peapod's own. It takes a detached copy of each lxcfs
// file with open_tree(2) here, then enters the container's mount namespace
// on a thread of its own and puts each in place with move_mount(2): a path
// in the host's namespace cannot be named from inside the container, and
// mount(2) cannot reach into another namespace. The thread is never given
// back to the Go scheduler: it has left peapod's namespace (and its root
// and cwd) for good, so the runtime ends it.
func Sync(t Target, dir string, plan Plan) error {
	if plan.Empty() {
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread: Go parks it rather than end it, and
			// /proc/self shows its namespaces, so it must never leave
			// peapod's. Hold it, so the work lands on another thread.
			errc <- Sync(t, dir, plan)
			runtime.UnlockOSThread()
			return
		}
		entered := false
		defer func() {
			if !entered {
				runtime.UnlockOSThread()
			}
		}()
		errc <- syncLocked(t, dir, plan, &entered)
	}()
	return <-errc
}

func syncLocked(t Target, dir string, plan Plan, entered *bool) error {
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", t.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mount namespace of pid %d: %w", t.Pid, err)
	}
	defer unix.Close(ns)
	// Checked after the namespace is open: from here the fd holds the
	// namespace of the process verified, whatever becomes of the pid.
	if err := t.verify(); err != nil {
		return err
	}
	var theirs, ours unix.Stat_t
	if err := unix.Fstat(ns, &theirs); err != nil {
		return err
	}
	if err := unix.Stat("/proc/thread-self/ns/mnt", &ours); err != nil {
		return err
	}
	if theirs.Ino == ours.Ino && theirs.Dev == ours.Dev {
		return fmt.Errorf("pid %d shares peapod's mount namespace", t.Pid)
	}

	trees := make([]int, 0, len(plan.Attach))
	defer func() {
		for _, fd := range trees {
			unix.Close(fd)
		}
	}()
	for _, p := range plan.Attach {
		fd, err := unix.OpenTree(unix.AT_FDCWD, filepath.Join(dir, p), unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return fmt.Errorf("open_tree %s: %w", filepath.Join(dir, p), err)
		}
		trees = append(trees, fd)
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: mountAttrs}); err != nil {
			return fmt.Errorf("mount_setattr %s: %w", filepath.Join(dir, p), err)
		}
	}

	// setns(CLONE_NEWNS) needs a thread that shares no fs_struct.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare(CLONE_FS): %w", err)
	}
	*entered = true
	if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("enter the mount namespace of pid %d: %w", t.Pid, err)
	}
	var errs []error
	for _, p := range plan.Detach {
		// MNT_DETACH: a process blocked in a read of the dead file keeps
		// its reference; everyone else sees the file below at once.
		if err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	for i, p := range plan.Attach {
		// The target is resolved without symlinks: inside the container's
		// namespace every path component is the container's to change.
		target, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
		if err != nil {
			errs = append(errs, fmt.Errorf("open %s: %w", p, err))
			continue
		}
		err = unix.MoveMount(trees[i], "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
		unix.Close(target)
		if err != nil {
			errs = append(errs, fmt.Errorf("move_mount onto %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
