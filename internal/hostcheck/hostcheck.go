// Package hostcheck finds the common ways a node is built or set up wrong
// for peapod: conmon missing or too old, an OCI runtime binary missing,
// not executable or too old, a root dir where overlayfs cannot put its
// upper dirs, cgroup controllers peapod writes to that are not there.
//
// `peapod check` prints every Result; `peapod serve` runs the same checks
// at start, logs each failure and keeps RuntimeReady false with the
// failure's Reason and message, so the kubelet keeps the node NotReady
// and says why instead of failing every pod later. Each message names the
// thing, the path and the fix.
package hostcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"peapod/oci"
)

// Reasons of the RuntimeReady condition, one per kind of problem.
const (
	ReasonConmon  = "ConmonUnusable"
	ReasonOverlay = "OverlayUnsupported"
	ReasonCgroups = "CgroupControllersMissing"
	ReasonRuntime = "RuntimeUnusable"
	// ReasonRuntimeCannotRun: the runtime binary is fine, but its
	// throwaway create fails on this host.
	ReasonRuntimeCannotRun = "RuntimeCannotRunContainers"
)

// Result is one check.
type Result struct {
	What   string // what was checked, as `peapod check` prints it
	Reason string // the RuntimeReady reason when Err is set
	Err    error  // nil: fine
}

// Options say what to check.
type Options struct {
	Root       string // peapod's root: container upper dirs live under it
	ConmonPath string // "": as oci finds it ($PATH, then /usr/bin/conmon)
	CgroupRoot string // "": /sys/fs/cgroup
	// SkipOverlay leaves out the overlay mount test (it needs root).
	SkipOverlay bool
}

// Host runs the checks that do not depend on a runtime handler: conmon,
// overlay upper dirs under Root, cgroup controllers.
func Host(ctx context.Context, o Options) []Result {
	out := []Result{Conmon(ctx, o.ConmonPath)}
	if !o.SkipOverlay {
		out = append(out, OverlayResult(o.Root))
	}
	cgRoot := o.CgroupRoot
	if cgRoot == "" {
		cgRoot = "/sys/fs/cgroup"
	}
	out = append(out, CgroupsResult(cgRoot, "/proc/self/mounts", "/proc/cgroups"))
	return out
}

// Failed returns the results that failed.
func Failed(rs []Result) []Result {
	var out []Result
	for _, r := range rs {
		if r.Err != nil {
			out = append(out, r)
		}
	}
	return out
}

// Conmon checks that conmon is there and takes every flag peapod passes.
func Conmon(ctx context.Context, configured string) Result {
	path, v, err := oci.CheckConmon(ctx, configured)
	if err != nil {
		return Result{What: "conmon", Reason: ReasonConmon, Err: err}
	}
	return Result{What: fmt.Sprintf("conmon %s (%s)", v, path)}
}

// RuntimeBinary checks the binary of runtime handler name: there,
// a file, executable. A bare name is looked up in $PATH.
func RuntimeBinary(name, path string) error {
	pkg := filepath.Base(path)
	if pkg != "runc" && pkg != "crun" {
		pkg = "the runtime's package"
	}
	fix := fmt.Sprintf("apt-get install %s, or set runtimes.%s.path to the runtime binary", pkg, name)
	if !strings.Contains(path, "/") {
		if _, err := exec.LookPath(path); err != nil {
			return fmt.Errorf("runtime %s: %q is not in $PATH (%s): %s", name, path, os.Getenv("PATH"), fix)
		}
		return nil
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("runtime %s: %s does not exist: %s", name, path, fix)
	case err != nil:
		return fmt.Errorf("runtime %s: %w: %s", name, err, fix)
	case fi.IsDir():
		return fmt.Errorf("runtime %s: %s is a directory, not the runtime binary: %s", name, path, fix)
	case fi.Mode()&0o111 == 0:
		return fmt.Errorf("runtime %s: %s is not executable (mode %v): chmod 755 %s, or %s", name, path, fi.Mode().Perm(), path, fix)
	}
	return nil
}

// Runtime checks handler name with its binary at path the way serve uses
// it: the binary (RuntimeBinary), its version (oci.MinRuntime; the error
// is an *oci.VersionError) and, asRoot, a throwaway `runtime create`
// (oci.Runtime.Check), with the runtime's state in scratch (a directory
// the caller removes), not the daemon's. Only a failed create has
// ReasonRuntimeCannotRun: the binary is fine but this host refuses it
// (Debian's crun 1.8.1 on a hybrid cgroup layout).
func Runtime(ctx context.Context, name, path, scratch string, asRoot bool) Result {
	r := Result{What: fmt.Sprintf("runtime %s (%s)", name, path), Reason: ReasonRuntime}
	if r.Err = RuntimeBinary(name, path); r.Err != nil {
		return r
	}
	rt, err := oci.New(oci.Options{
		Name: name, Path: path,
		Root:     filepath.Join(scratch, name, "root"),
		StateDir: filepath.Join(scratch, name, "state"),
	})
	if err != nil {
		r.Err = err
		return r
	}
	if v, ok := rt.Version(ctx); ok {
		r.What = fmt.Sprintf("runtime %s %s (%s)", name, v, path)
	}
	if r.Err = rt.CheckVersion(ctx); r.Err != nil || !asRoot {
		return r
	}
	r.Reason, r.Err = ReasonRuntimeCannotRun, rt.Check(ctx)
	return r
}
