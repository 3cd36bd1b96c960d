package hostcheck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// overlayCheckPrefix names the scratch dirs Overlay makes under root:
// <prefix><pid>-..., so a later check can sweep those of a dead peapod.
const overlayCheckPrefix = ".overlay-check-"

// OverlayResult is Overlay as a Result. A root that does not exist yet
// (`peapod check` before the first serve) is tested at its nearest
// existing parent: the filesystem serve will create it on.
func OverlayResult(root string) Result {
	dir := root
	for {
		if _, err := os.Stat(dir); err == nil || dir == "/" || dir == "." {
			break
		}
		dir = filepath.Dir(dir)
	}
	what := "overlayfs upper dirs in " + root
	if dir != root {
		what += " (not there yet: tested at " + dir + ")"
	}
	if err := Overlay(dir); err != nil {
		return Result{What: what, Reason: ReasonOverlay, Err: err}
	}
	return Result{What: what}
}

// Overlay tests that overlayfs can use dir's filesystem for its upper and
// work dirs, as peapod does for every container (<root>/containers/<id>/
// {upper,work}): it mounts a one-file overlay in a scratch dir under dir,
// writes through it and unmounts it, as containerd's overlay snapshotter
// does at start (overlayutils.Supported). /proc/filesystems is not enough:
// overlay on overlay, NFS, FUSE, vfat and xfs without d_type all mount as
// a lower dir but not as an upper one.
func Overlay(dir string) error {
	sweepOverlayChecks(dir)
	tmp, err := os.MkdirTemp(dir, overlayCheckPrefix+strconv.Itoa(os.Getpid())+"-")
	if errors.Is(err, unix.EROFS) {
		return fmt.Errorf("cannot test overlayfs in %s: it is on a read-only filesystem, where peapod cannot keep images and container layers: "+
			"remount it read-write or set root in peapod.toml (or serve --root) to a writable directory", dir)
	}
	if err != nil {
		return fmt.Errorf("cannot test overlayfs in %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp)
	lower, upper, work, merged := filepath.Join(tmp, "lower"), filepath.Join(tmp, "upper"), filepath.Join(tmp, "work"), filepath.Join(tmp, "merged")
	for _, d := range []string{lower, upper, work, merged} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("cannot test overlayfs in %s: %w", dir, err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("lower"), 0o600); err != nil {
		return fmt.Errorf("cannot test overlayfs in %s: %w", dir, err)
	}
	fsType := fsTypeName(dir)
	fix := "set root in peapod.toml (or serve --root) to a directory on ext4, xfs (ftype=1), btrfs or tmpfs"
	if ok, err := hasDType(lower); err == nil && !ok {
		return fmt.Errorf("%s is on %s without d_type in directory entries (xfs made with ftype=0?), which overlayfs cannot use for upper dirs: "+
			"containers would not start or lose whiteouts; %s", dir, fsType, fix)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		switch {
		case errors.Is(err, unix.ENODEV):
			return fmt.Errorf("the kernel has no overlay filesystem (mount: %w): modprobe overlay, or build the kernel with CONFIG_OVERLAY_FS", err)
		case errors.Is(err, unix.EPERM):
			return fmt.Errorf("cannot test overlayfs in %s: mount: %w (run as root)", dir, err)
		}
		return fmt.Errorf("%s is on %s, which overlayfs cannot use for upper dirs (mount: %w; the kernel log says why): "+
			"no container could get its root filesystem; %s", dir, fsType, err, fix)
	}
	werr := os.WriteFile(filepath.Join(merged, "f"), []byte("upper"), 0o600) // a copy-up
	if err := unmount(merged); err != nil {
		return fmt.Errorf("test overlay in %s: %w", dir, err)
	}
	if werr != nil {
		return fmt.Errorf("%s is on %s, where an overlay mounts but cannot be written (%w): %s", dir, fsType, werr, fix)
	}
	return nil
}

func unmount(dir string) error {
	if err := unix.Unmount(dir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return unix.Unmount(dir, unix.MNT_DETACH)
	}
	return nil
}

// sweepOverlayChecks removes the scratch dirs of checks whose process is
// gone (killed mid-check, it may have left the overlay mounted).
func sweepOverlayChecks(dir string) {
	olds, _ := filepath.Glob(filepath.Join(dir, overlayCheckPrefix+"*"))
	for _, old := range olds {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(old), overlayCheckPrefix), "-")
		if n, err := strconv.Atoi(pid); err == nil && n != os.Getpid() {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", n)); err == nil {
				continue
			}
		}
		_ = unmount(filepath.Join(old, "merged"))
		if err := os.RemoveAll(old); err != nil {
			klog.V(2).InfoS("Stale overlay check dir not removed", "dir", old, "err", err)
		}
	}
}

// hasDType says whether dir's filesystem fills in d_type (overlayfs needs
// it to find whiteouts). dir must hold at least one entry besides . and ..
func hasDType(dir string) (bool, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	n, err := unix.ReadDirent(fd, buf)
	if err != nil {
		return false, err
	}
	// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
	for off := 0; off+19 <= n; {
		reclen := int(*(*uint16)(unsafe.Pointer(&buf[off+16])))
		if reclen == 0 || off+reclen > n {
			break
		}
		name := unix.ByteSliceToString(buf[off+19 : off+reclen])
		if name != "." && name != ".." {
			return buf[off+18] != unix.DT_UNKNOWN, nil
		}
		off += reclen
	}
	return false, errors.New("no entry")
}

// fsTypeName names the filesystem dir is on, for messages.
func fsTypeName(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "an unknown filesystem"
	}
	names := map[int64]string{
		unix.OVERLAYFS_SUPER_MAGIC: "overlayfs", unix.TMPFS_MAGIC: "tmpfs", unix.EXT4_SUPER_MAGIC: "ext4",
		unix.XFS_SUPER_MAGIC: "xfs", unix.BTRFS_SUPER_MAGIC: "btrfs", unix.MSDOS_SUPER_MAGIC: "vfat",
		unix.NFS_SUPER_MAGIC: "nfs", unix.FUSE_SUPER_MAGIC: "a FUSE filesystem", 0x2fc12fc1: "zfs",
		unix.SQUASHFS_MAGIC: "squashfs", unix.ECRYPTFS_SUPER_MAGIC: "ecryptfs", unix.V9FS_MAGIC: "9p",
		unix.CIFS_SUPER_MAGIC: "cifs", unix.SMB2_SUPER_MAGIC: "smb2", unix.EXFAT_SUPER_MAGIC: "exfat",
	}
	if n, ok := names[int64(st.Type)]; ok {
		return n
	}
	return fmt.Sprintf("filesystem type %#x", st.Type)
}
