package sandbox

import (
	"errors"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"
)

// cgroupDirs lists where a cgroupfs path lives: one dir per v1 hierarchy
// (and the unified one on hybrid hosts), or the single v2 dir.
func cgroupDirs(path string) []string {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return []string{filepath.Join(cgroupRoot, path)}
	}
	dirs, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", path))
	return dirs
}

// removeCgroup removes an empty cgroup in every hierarchy. The runtime
// removes a container's cgroup on delete, but a `create` cut short (a
// caller's deadline, a failed start) can leave it, and nothing removes a
// pod-level parent. Best effort: a cgroup that still has tasks stays.
func removeCgroup(path string) {
	if path == "" || path == "/" {
		return
	}
	for _, d := range cgroupDirs(path) {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			klog.V(2).InfoS("Cgroup not removed", "path", d, "err", err)
		}
	}
}
