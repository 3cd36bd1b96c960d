package volumes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	ID         int
	Parent     int
	Major      uint32
	Minor      uint32
	Root       string // path inside the source filesystem that is mounted here
	MountPoint string
	Options    string
	FSType     string
	Source     string
}

// mountInfoPath is a variable so tests can point it elsewhere.
var mountInfoPath = "/proc/self/mountinfo"

func readMountInfo() ([]mountInfo, error) {
	data, err := os.ReadFile(mountInfoPath)
	if err != nil {
		return nil, err
	}
	return parseMountInfo(data)
}

// parseMountInfo parses the proc(5) mountinfo format:
// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
func parseMountInfo(data []byte) ([]mountInfo, error) {
	var out []mountInfo
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("malformed mountinfo line %q", line)
		}
		var mi mountInfo
		mi.ID, _ = strconv.Atoi(f[0])
		mi.Parent, _ = strconv.Atoi(f[1])
		if maj, min, ok := strings.Cut(f[2], ":"); ok {
			a, _ := strconv.ParseUint(maj, 10, 32)
			b, _ := strconv.ParseUint(min, 10, 32)
			mi.Major, mi.Minor = uint32(a), uint32(b)
		}
		mi.Root = unescapeMountPath(f[3])
		mi.MountPoint = unescapeMountPath(f[4])
		mi.Options = f[5]
		mi.FSType = f[sep+1]
		mi.Source = unescapeMountPath(f[sep+2])
		out = append(out, mi)
	}
	return out, sc.Err()
}

// unescapeMountPath undoes the kernel's octal escaping of space, tab, newline
// and backslash (\040 and friends).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsAt returns the mounts whose mount point is path (stacked mounts give
// more than one), newest last.
func mountsAt(path string) ([]mountInfo, error) {
	all, err := readMountInfo()
	if err != nil {
		return nil, err
	}
	path = filepath.Clean(path)
	var out []mountInfo
	for _, m := range all {
		if m.MountPoint == path {
			out = append(out, m)
		}
	}
	return out, nil
}

func isMountPoint(path string) (bool, error) {
	ms, err := mountsAt(path)
	return len(ms) > 0, err
}

// mountsBeneath returns the mount points strictly below dir or at dir,
// deepest first so they can be unmounted in that order.
func mountsBeneath(dir string) ([]string, error) {
	all, err := readMountInfo()
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, m := range all {
		if m.MountPoint == dir || strings.HasPrefix(m.MountPoint, dir+"/") {
			out = append(out, m.MountPoint)
		}
	}
	// Deepest (longest) first; a later mount over the same point comes later in
	// mountinfo, so reverse keeps the stacked order right too.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	sortByDepthDesc(out)
	return out, nil
}

func sortByDepthDesc(p []string) {
	// insertion sort, stable, few elements
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && strings.Count(p[j], "/") > strings.Count(p[j-1], "/"); j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
}

// unmountAll unmounts every mount stacked at path. Not mounted is success.
func unmountAll(path string) error {
	for i := 0; i < 16; i++ {
		mounted, err := isMountPoint(path)
		if err != nil {
			return err
		}
		if !mounted {
			return nil
		}
		if err := unix.Unmount(path, 0); err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				return nil
			}
			if errors.Is(err, unix.EBUSY) && i < 5 {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted", path)
}

// removeDirSafely removes dir and everything below it, but refuses when any
// mount is still present beneath it: RemoveAll must never walk into a
// filesystem that is not ours (a bind-mounted host dir, a disk).
func removeDirSafely(dir string) error {
	ms, err := mountsBeneath(dir)
	if err != nil {
		return err
	}
	if len(ms) > 0 {
		return fmt.Errorf("refusing to remove %s: still mounted: %v", dir, ms)
	}
	if err := os.RemoveAll(dir); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// bindMount bind-mounts src at target, read-only when ro (a bind mount
// ignores MS_RDONLY at first, so it takes a remount as mount(8) does).
func bindMount(src, target string, ro bool) error {
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", src, target, err)
	}
	if ro {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, 0)
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	return nil
}

// mountTmpfs mounts a fresh tmpfs at target; size 0 means the kernel
// default. mode is the root's, in chmod(2) bits (01777: sticky).
func mountTmpfs(target string, size int64, mode uint32) error {
	data := fmt.Sprintf("mode=%o", mode&0o7777)
	if size > 0 {
		data += fmt.Sprintf(",size=%d", size)
	}
	if err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return fmt.Errorf("mount tmpfs at %s (%s): %w", target, data, err)
	}
	return nil
}

// hasFilesystem reports whether the block device holds a filesystem or a
// partition table, with the probe the kubelet's SafeFormatAndMount uses:
// blkid exits 2 when it finds nothing.
func hasFilesystem(dev string) (string, bool, error) {
	out, err := exec.Command("blkid", "-p", "-s", "TYPE", "-s", "PTTYPE", "-o", "export", dev).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 2 {
			return "", false, nil
		}
		return "", false, fmt.Errorf("blkid %s: %v: %s", dev, err, bytes.TrimSpace(out))
	}
	var fsType, ptType string
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "TYPE="); ok {
			fsType = v
		}
		if v, ok := strings.CutPrefix(l, "PTTYPE="); ok {
			ptType = v
		}
	}
	if fsType == "" && ptType != "" {
		return "", true, fmt.Errorf("%s holds a partition table (%s) and no filesystem; refusing to format", dev, ptType)
	}
	return fsType, true, nil
}

// formatAndMount formats dev with fsType when it holds no filesystem at all
// (never over an existing one) and mounts it at target.
func formatAndMount(dev, target, fsType string, ro bool) error {
	if fsType == "" {
		fsType = "ext4"
	}
	existing, found, err := hasFilesystem(dev)
	if err != nil {
		return err
	}
	if !found {
		if ro {
			return fmt.Errorf("%s has no filesystem and is read-only; cannot format", dev)
		}
		args := []string{dev}
		switch fsType {
		case "ext4", "ext3", "ext2":
			args = []string{"-F", "-m0", dev}
		case "xfs":
			args = []string{"-f", dev}
		}
		if out, err := exec.Command("mkfs."+fsType, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("mkfs.%s %s: %v: %s", fsType, dev, err, bytes.TrimSpace(out))
		}
		existing = fsType
	}
	var flags uintptr
	if ro {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(dev, target, existing, flags, ""); err != nil {
		return fmt.Errorf("mount %s (%s) at %s: %w", dev, existing, target, err)
	}
	return nil
}

func isBlockDevice(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
}
