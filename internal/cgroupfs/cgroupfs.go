// Package cgroupfs creates, joins and removes cgroups by their cgroupfs
// path ("/peapod/pod<uid>/<id>") in every hierarchy: one dir per v1
// controller (and the unified one on hybrid hosts), or the single v2 dir.
// runc does this for containers; peapod needs it for what no runtime
// starts (the pause, conmon) and for cleaning up after the runtime.
package cgroupfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/klog/v2"
)

// Root is where the hierarchies are mounted.
var Root = "/sys/fs/cgroup"

// Dirs lists where a cgroupfs path lives: one dir per v1 hierarchy
// (and the unified one on hybrid hosts), or the single v2 dir.
func Dirs(path string) []string {
	if _, err := os.Stat(filepath.Join(Root, "cgroup.controllers")); err == nil {
		return []string{filepath.Join(Root, path)}
	}
	dirs, _ := filepath.Glob(filepath.Join(Root, "*", path))
	return dirs
}

// Remove removes an empty cgroup in every hierarchy. The runtime
// removes a container's cgroup on delete, but a `create` cut short (a
// caller's deadline, a failed start) can leave it, and nothing removes a
// pod-level parent. Best effort: a cgroup that still has tasks stays.
func Remove(path string) {
	if path == "" || path == "/" {
		return
	}
	for _, d := range Dirs(path) {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			klog.V(2).InfoS("Cgroup not removed", "path", d, "err", err)
		}
	}
}

// Join puts pid into path in every hierarchy, creating it as runc
// would for a container, and sets its cpu weight (v1 shares; 0 = leave).
// It is how the pause, which no runtime starts, gets its cgroup.
func Join(path string, pid int, shares uint64) error {
	if _, err := os.Stat(filepath.Join(Root, "cgroup.controllers")); err == nil {
		dir := filepath.Join(Root, path)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if shares > 0 {
			// runc's conversion of shares to cgroup v2 cpu.weight.
			w := 1 + ((shares-2)*9999)/262142
			if err := writeFile(filepath.Join(dir, "cpu.weight"), strconv.FormatUint(w, 10)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid))
	}
	dirs, err := createV1(path)
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		if shares > 0 {
			if err := writeFile(filepath.Join(dir, "cpu.shares"), strconv.FormatUint(shares, 10)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
	}
	return nil
}

// Create makes path in every hierarchy (its parents too, each new v1
// cpuset cgroup filled from its parent so that tasks may join it) and
// returns the dirs. An existing cgroup is left as it is.
func Create(path string) ([]string, error) {
	if _, err := os.Stat(filepath.Join(Root, "cgroup.controllers")); err == nil {
		dir := filepath.Join(Root, path)
		return []string{dir}, os.MkdirAll(dir, 0o755)
	}
	return createV1(path)
}

func createV1(path string) ([]string, error) {
	hierarchies, err := os.ReadDir(Root)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, h := range hierarchies {
		if !h.IsDir() {
			continue // cpu -> cpu,cpuacct style links name a hierarchy twice
		}
		root := filepath.Join(Root, h.Name())
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
			continue
		}
		dir := root
		for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
			parent := dir
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return nil, err
			}
			if err := inheritCpuset(parent, dir); err != nil {
				return nil, err
			}
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

// IsV2 says whether the host has the unified hierarchy only.
func IsV2() bool {
	_, err := os.Stat(filepath.Join(Root, "cgroup.controllers"))
	return err == nil
}

// Set writes value to the control file named file of the cgroup at path,
// in the hierarchy that has it. A file no hierarchy has is
// ErrNotExist (a controller this host lacks).
func Set(path, file, value string) error {
	for _, d := range Dirs(path) {
		f := filepath.Join(d, file)
		if _, err := os.Stat(f); err != nil {
			continue
		}
		if err := writeFile(f, value); err != nil {
			return fmt.Errorf("%s = %s: %w", f, value, err)
		}
		return nil
	}
	return fmt.Errorf("cgroup %s: %s: %w", path, file, os.ErrNotExist)
}

// Get reads the control file named file of the cgroup at path.
func Get(path, file string) (string, error) {
	for _, d := range Dirs(path) {
		b, err := os.ReadFile(filepath.Join(d, file))
		if err == nil {
			return strings.TrimSpace(string(b)), nil
		}
	}
	return "", fmt.Errorf("cgroup %s: %s: %w", path, file, os.ErrNotExist)
}

// inheritCpuset copies cpuset.cpus and cpuset.mems into a new v1 cpuset
// cgroup: they start empty, and no task may join an empty cpuset.
func inheritCpuset(parent, dir string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := os.ReadFile(filepath.Join(dir, f))
		if errors.Is(err, os.ErrNotExist) {
			return nil // not the cpuset hierarchy
		}
		if err != nil {
			return err
		}
		if len(strings.TrimSpace(string(cur))) > 0 {
			continue
		}
		val, err := os.ReadFile(filepath.Join(parent, f))
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, f), string(val)); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
		}
	}
	return nil
}

// writeFile writes an existing control file; cgroupfs refuses to
// create files (EACCES), so a missing one must stay ErrNotExist.
func writeFile(path, val string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(val)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// HasController says whether a controller is usable by a cgroupfs runtime
// (runc, crun) on this host: listed in cgroup.controllers on a pure v2
// host, or mounted as its own v1 hierarchy. On a hybrid host a controller
// attached only to the unified mount (this machine kind's hugetlb) does
// not count: runc in v1 mode never looks there, and a spec that sets its
// limits fails with "container could not join or create cgroup".
func HasController(name string) bool {
	if b, err := os.ReadFile(filepath.Join(Root, "cgroup.controllers")); err == nil {
		return slicesContains(strings.Fields(string(b)), name)
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	return hasV1Controller(string(mounts), Root, name)
}

// hasV1Controller finds a v1 cgroup mount below root whose options name
// the controller.
func hasV1Controller(mounts, root, name string) bool {
	for _, line := range strings.Split(mounts, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != "cgroup" || !strings.HasPrefix(f[1], root+"/") {
			continue
		}
		if slicesContains(strings.Split(f[3], ","), name) {
			return true
		}
	}
	return false
}

func slicesContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
