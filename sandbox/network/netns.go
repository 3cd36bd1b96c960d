package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"peapod/internal/nsthread"
)

// NewNetNS creates a network namespace and pins it with a bind mount at
// NetNSDir/name, returning that path. The calling goroutine's thread never
// enters the new namespace: the work runs on a dedicated, locked thread that
// moves back to its original namespace afterwards, and is thrown away if it
// cannot (as containerd's pkg/netns and CNI's testutils do).
//
// Hand-written rather than CNI's plugins/pkg/testutils: that lives in the
// plugins module, which peapod does not otherwise need, and is test code.
func (m *Manager) NewNetNS(name string) (string, error) {
	path, err := m.makePin(name)
	if err != nil {
		return "", err
	}
	err = onNetNSThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		}
		return nil
	}, func() error {
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting the netns on %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		_ = unix.Unlink(path)
		return "", err
	}
	return path, nil
}

// makePin creates the empty file NetNSDir/name a namespace is bind-mounted
// on (the name is checked: no escaping NetNSDir).
func (m *Manager) makePin(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return "", fmt.Errorf("invalid netns name %q", name)
	}
	if err := os.MkdirAll(m.opts.NetNSDir, 0o755); err != nil {
		return "", fmt.Errorf("netns dir: %w", err)
	}
	path := filepath.Join(m.opts.NetNSDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", fmt.Errorf("creating netns pin: %w", err)
	}
	f.Close()
	return path, nil
}

// PinNetNS pins the network namespace of process pid (a pause that made
// its own inside the pod's user namespace) at NetNSDir/name, as NewNetNS
// pins a new one; RemoveNetNS undoes it.
func (m *Manager) PinNetNS(name string, pid int) (string, error) {
	path, err := m.makePin(name)
	if err != nil {
		return "", err
	}
	src := fmt.Sprintf("/proc/%d/ns/net", pid)
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		_ = unix.Unlink(path)
		return "", fmt.Errorf("bind-mounting %s on %s: %w", src, path, err)
	}
	return path, nil
}

// RemoveNetNS unmounts a pinned netns and removes its file. A path that is
// missing or no longer mounted is fine: RemoveNetNS is idempotent.
func (m *Manager) RemoveNetNS(path string) error {
	return RemoveNetNS(path)
}

// RemoveNetNS is Manager.RemoveNetNS without a Manager.
func RemoveNetNS(path string) error {
	if path == "" {
		return nil
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting netns %s: %w", path, err)
	}
	// unlink, not os.Remove: never rmdir a directory given by mistake.
	if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing netns pin %s: %w", path, err)
	}
	return nil
}

// IsNetNS reports whether path is a network namespace (an nsfs file such as
// a pin or /proc/PID/ns/net). The error says why not.
func IsNetNS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, err
	}
	if st.Type != unix.NSFS_MAGIC {
		return false, fmt.Errorf("%s is not a network namespace", path)
	}
	return true, nil
}

// InNetNS runs fn on a locked OS thread inside the network namespace at
// path, then moves the thread back; a thread that cannot move back is
// thrown away. fn must not start goroutines that expect to be in the
// namespace: only the calling thread is. Sockets fn creates stay in the
// namespace after it returns.
func InNetNS(path string, fn func() error) error {
	if ok, err := IsNetNS(path); !ok {
		return fmt.Errorf("entering netns: %w", err)
	}
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("entering netns: %w", err)
	}
	defer target.Close()
	return onNetNSThread(func() error {
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns %s: %w", path, err)
		}
		return nil
	}, fn)
}

// onNetNSThread runs fn on a locked OS thread that enter has moved into
// another network namespace, then moves the thread back (internal/nsthread).
func onNetNSThread(enter, fn func() error) error {
	return nsthread.Run(unix.CLONE_NEWNET, func() error {
		if err := enter(); err != nil {
			return err
		}
		return fn()
	})
}

// loopbackUp sets lo up in the netns at path.
func loopbackUp(path string) error {
	return InNetNS(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("finding lo: %w", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("setting lo up: %w", err)
		}
		return nil
	})
}
