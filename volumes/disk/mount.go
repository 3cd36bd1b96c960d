package disk

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

// MountInfo is one line of /proc/self/mountinfo.
type MountInfo struct {
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

// MountInfoPath is a variable so tests can point it elsewhere.
var MountInfoPath = "/proc/self/mountinfo"

func ReadMountInfo() ([]MountInfo, error) {
	data, err := os.ReadFile(MountInfoPath)
	if err != nil {
		return nil, err
	}
	return ParseMountInfo(data)
}

// ParseMountInfo parses the proc(5) mountinfo format:
// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
func ParseMountInfo(data []byte) ([]MountInfo, error) {
	var out []MountInfo
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
		var mi MountInfo
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

// MountsAt returns the mounts whose mount point is path (stacked mounts give
// more than one), newest last.
func MountsAt(path string) ([]MountInfo, error) {
	all, err := ReadMountInfo()
	if err != nil {
		return nil, err
	}
	path = filepath.Clean(path)
	var out []MountInfo
	for _, m := range all {
		if m.MountPoint == path {
			out = append(out, m)
		}
	}
	return out, nil
}

func IsMountPoint(path string) (bool, error) {
	ms, err := MountsAt(path)
	return len(ms) > 0, err
}

// UnmountAll unmounts every mount stacked at path. Not mounted is success.
func UnmountAll(path string) error {
	for i := 0; i < 16; i++ {
		mounted, err := IsMountPoint(path)
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

// BindMount bind-mounts src at target, read-only when ro (a bind mount
// ignores MS_RDONLY at first, so it takes a remount as mount(8) does).
func BindMount(src, target string, ro bool) error {
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

// HasFilesystem reports whether the block device holds a filesystem or a
// partition table, with the probe the kubelet's SafeFormatAndMount uses:
// blkid exits 2 when it finds nothing.
func HasFilesystem(dev string) (string, bool, error) {
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

// FormatAndMount formats dev with fsType when it holds no filesystem at all
// (never over an existing one) and mounts it at target.
func FormatAndMount(dev, target, fsType string, ro bool) error {
	if fsType == "" {
		fsType = "ext4"
	}
	existing, found, err := HasFilesystem(dev)
	if err != nil {
		return err
	}
	if !found {
		if ro {
			return fmt.Errorf("%s has no filesystem and is read-only; cannot format", dev)
		}
		if err := Format(dev, fsType); err != nil {
			return err
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

// Format makes a filesystem of fsType on dev, unconditionally: callers check
// with HasFilesystem first. ext* get no reserved blocks (-m0): a volume's
// capacity is all its user's.
func Format(dev, fsType string) error {
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
	return nil
}

// DeviceOf returns the block device (/dev/<name>) behind a mountinfo entry,
// through /sys/dev/block/MAJ:MIN, or "" when the mount is not of a block
// device (tmpfs, overlay...).
func DeviceOf(m MountInfo) string {
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", m.Major, m.Minor))
	if err != nil {
		return ""
	}
	return "/dev/" + filepath.Base(link)
}
