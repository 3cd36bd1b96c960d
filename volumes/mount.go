package volumes

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"peapod/volumes/disk"
)

// The mountinfo reader and the mount / format helpers live in volumes/disk,
// shared with the CSI driver (csi/loop).

type mountInfo = disk.MountInfo

func parseMountInfo(data []byte) ([]mountInfo, error) { return disk.ParseMountInfo(data) }
func readMountInfo() ([]mountInfo, error)             { return disk.ReadMountInfo() }
func mountsAt(path string) ([]mountInfo, error)       { return disk.MountsAt(path) }
func isMountPoint(path string) (bool, error)          { return disk.IsMountPoint(path) }
func unmountAll(path string) error                    { return disk.UnmountAll(path) }
func bindMount(src, target string, ro bool) error     { return disk.BindMount(src, target, ro) }
func formatAndMount(dev, target, fsType string, ro bool) error {
	return disk.FormatAndMount(dev, target, fsType, ro)
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

func isBlockDevice(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
}
