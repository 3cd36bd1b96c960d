package sandbox

// Pods with their own user namespace (CRI NamespaceMode POD in
// userns_options; the kubelet's `hostUsers: false`).
//
// The pause is started by peapod itself (sandbox/infra), so peapod makes
// the user namespace: the pause is cloned into a new user namespace with
// the kubelet's mappings and, inside it, new network, IPC, UTS (and PID)
// namespaces, which that user namespace therefore owns — pod root can
// mount sysfs and mqueue and set its namespaced sysctls, as with
// containerd and CRI-O. The new netns is then pinned at the usual
// /run/netns path and networked by CNI as any other.
//
// Containers join the pause's user namespace (/proc/<pause>/ns/user) and
// carry the same mappings in their OCI spec. Their rootfs is an overlay
// whose image layers are idmapped mounts through that namespace (host uid 0
// on disk is the pod's host root uid, so container root inside), with an
// upper dir owned by the pod's host root; the layers on disk stay shared
// with every other pod. Volumes the kubelet marks (uid/gid mappings on a
// CRI mount) and the pod's hosts/hostname/resolv.conf are idmapped mounts
// that the OCI runtime makes: only handlers whose runtime reports user
// namespaces and idmapped mounts (`runtime features`; runc >= 1.2, not
// Debian's 1.1.5) take such pods.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"peapod/oci"
	"peapod/sandbox/spec"
)

// featurer is an OCIRuntime that can say what it supports (*oci.Runtime).
type featurer interface {
	Features(ctx context.Context) oci.Features
}

// HandlerUserNamespaces reports whether runtime handler (""= the default)
// can run pods with their own user namespace; when not, why.
func (m *Manager) HandlerUserNamespaces(ctx context.Context, handler string) (bool, string) {
	rt, err := m.runtime(handler)
	if err != nil {
		return false, err.Error()
	}
	f, ok := rt.(featurer)
	if !ok {
		return false, "the runtime does not report its features"
	}
	ft := f.Features(ctx)
	return ft.UserNamespaces, ft.Why
}

// checkUserNS refuses a pod with its own user namespace on a handler that
// cannot run it, naming the field and the handler.
func (m *Manager) checkUserNS(ctx context.Context, handler string) error {
	ok, why := m.HandlerUserNamespaces(ctx, handler)
	if !ok {
		return fmt.Errorf("%w: config.linux.security_context.namespace_options.userns_options: mode POD (a user namespace) needs a runtime handler with user namespaces and idmapped mounts; handler %q: %s",
			ErrFailedPrecondion, handler, why)
	}
	// The runtime's init, as the pod's root (an unprivileged host uid),
	// walks to the rootfs and the pod's files under the state dir: a
	// parent it cannot search fails every container with runc's bare
	// "remount-propagation …: permission denied".
	if err := searchableByAll(m.o.State); err != nil {
		return fmt.Errorf("%w: config.linux.security_context.namespace_options.userns_options: mode POD needs peapod's state dir reachable by the pod's unprivileged root: %v", ErrFailedPrecondion, err)
	}
	return nil
}

// searchableByAll checks that dir and every parent of it can be searched
// (x) by any user.
func searchableByAll(dir string) error {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s (mode %04o) is not searchable by other users: chmod o+x %s", p, fi.Mode().Perm(), p)
		}
		if p == "/" || p == "." {
			return nil
		}
	}
}

// netnsPinner pins an existing network namespace (the pause's, made in
// the pod's user namespace) where NewNetNS would have made one.
type netnsPinner interface {
	PinNetNS(name string, pid int) (string, error)
}

// pinPauseNetNS pins the netns of pid as "peapod-<id>".
func (m *Manager) pinPauseNetNS(id string, pid int) (string, error) {
	p, ok := m.o.Network.(netnsPinner)
	if !ok {
		return "", errors.New("the network manager cannot pin a pause's network namespace")
	}
	return p.PinNetNS("peapod-"+id, pid)
}

// userNSFD opens the user namespace of the pause of a pod.
func userNSFD(pausePID int) (*os.File, error) {
	if pausePID <= 0 {
		return nil, errors.New("the pod's pause is not running")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", pausePID))
	if err != nil {
		return nil, fmt.Errorf("open the pod's user namespace: %w", err)
	}
	return f, nil
}

// mountIDMappedOverlay mounts the image layers (top first) at target under
// a writable upper, the layers idmapped through the user namespace usernsFD
// (containerd 2's way: the snapshots stay shared and unchanged on disk).
// Each layer is cloned (open_tree), idmapped (mount_setattr
// MOUNT_ATTR_IDMAP) and attached under tmpDir only until overlayfs holds
// it; upper and work belong to the pod's host root (hostUID:hostGID) so
// container root owns /. The kernel must allow idmapped layers (>= 5.19).
func mountIDMappedOverlay(target string, lowerDirs []string, upper, work, tmpDir string, usernsFD int, hostUID, hostGID int) (retErr error) {
	if len(lowerDirs) == 0 {
		return fmt.Errorf("image has no layers")
	}
	for _, d := range []string{upper, work} {
		if err := os.Chown(d, hostUID, hostGID); err != nil {
			return fmt.Errorf("chown %s to the pod's root %d:%d: %w", d, hostUID, hostGID, err)
		}
	}
	if err := os.MkdirAll(tmpDir, 0o700); err != nil {
		return err
	}
	var mapped []string
	defer func() {
		// Once overlayfs is mounted it holds the idmapped layers itself:
		// their mount points go either way.
		for _, p := range mapped {
			_ = unix.Unmount(p, unix.MNT_DETACH)
		}
		os.RemoveAll(tmpDir)
	}()
	for i, l := range lowerDirs {
		p := filepath.Join(tmpDir, fmt.Sprint(i))
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		if err := idmapBind(l, p, usernsFD); err != nil {
			return fmt.Errorf("idmap layer %s: %w", l, err)
		}
		mapped = append(mapped, p)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(mapped, ":"), upper, work)
	if len(opts) >= unix.Getpagesize() {
		return fmt.Errorf("overlay options for %d layers exceed one page", len(lowerDirs))
	}
	return unix.Mount("overlay", target, "overlay", 0, opts)
}

// idmapBind attaches at dst a clone of src idmapped through usernsFD.
func idmapBind(src, dst string, usernsFD int) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(usernsFD)}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("mount_setattr(MOUNT_ATTR_IDMAP): %w", err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// sandboxUserNS is the user namespace a sandbox's config asks for.
func sandboxUserNS(sb *Sandbox) spec.UserNS {
	u, _ := spec.PodUserNS(sb.Config().GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions(), "")
	return u
}
