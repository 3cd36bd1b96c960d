package stats

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// fsInfo is one statfs, cAdvisor's FsInfo for the filesystem holding a path.
type fsInfo struct {
	Time                       time.Time
	Capacity, Available, Usage uint64
	Inodes, InodesFree         uint64
	HaveInodes                 bool
}

func statfs(path string) (fsInfo, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fsInfo{}, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	bs := uint64(st.Bsize)
	return fsInfo{
		Time:       time.Now(),
		Capacity:   st.Blocks * bs,
		Available:  st.Bavail * bs,
		Usage:      (st.Blocks - st.Bfree) * bs,
		Inodes:     st.Files,
		InodesFree: st.Ffree,
		// Filesystems without inodes (btrfs) report 0 files.
		HaveInodes: st.Files > 0,
	}, nil
}

// nodeFs is the kubelet's RootFsStats.
func nodeFs(fi fsInfo) *statsapi.FsStats {
	out := &statsapi.FsStats{
		Time:           metav1.NewTime(fi.Time),
		AvailableBytes: &fi.Available,
		CapacityBytes:  &fi.Capacity,
		UsedBytes:      &fi.Usage,
	}
	if fi.HaveInodes {
		used := fi.Inodes - min(fi.InodesFree, fi.Inodes)
		out.Inodes, out.InodesFree, out.InodesUsed = &fi.Inodes, &fi.InodesFree, &used
	}
	return out
}

// withCapacity fills the capacity half of fs (available, capacity, inodes)
// from the filesystem the usage half lives on, as the kubelet does for
// rootfs, logs and imageFs.
func withCapacity(fs *statsapi.FsStats, fi fsInfo) {
	avail, capa := fi.Available, fi.Capacity
	fs.AvailableBytes, fs.CapacityBytes = &avail, &capa
	if fi.HaveInodes {
		in, free := fi.Inodes, fi.InodesFree
		fs.Inodes, fs.InodesFree = &in, &free
	}
}

// fsCache statfs's each mount point once per summary.
type fsCache map[string]*fsInfo

func (c fsCache) get(path string) *fsInfo {
	if fi, ok := c[path]; ok {
		return fi
	}
	var out *fsInfo
	if fi, err := statfs(path); err == nil {
		out = &fi
	}
	c[path] = out
	return out
}

// podLogsDir is the kubelet's BuildPodLogsDirectory.
func podLogsDir(root, namespace, name, uid string) string {
	return filepath.Join(root, strings.Join([]string{namespace, name, uid}, "_"))
}

// logUsage sums the files directly in dir (not its sub-directories), as the
// kubelet's hostStatsProvider does for a pod's or a container's log
// directory: bytes on disk (st_blocks) and one inode per file, over the
// capacity of the node filesystem.
func logUsage(dir string, node fsInfo) (*statsapi.FsStats, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := &statsapi.FsStats{}
	withCapacity(out, node)
	var used, inodes uint64
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // rotated away meanwhile
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			used += uint64(st.Blocks) * 512
		} else {
			used += uint64(fi.Size())
		}
		inodes++
	}
	out.Time = metav1.NewTime(time.Now())
	out.UsedBytes, out.InodesUsed = &used, &inodes
	return out, nil
}
