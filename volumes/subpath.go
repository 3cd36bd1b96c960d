package volumes

import (
	"peapod/agent/objects"
	"peapod/downward"

	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
)

// subPath mounts. The sub path is resolved beneath the volume root with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS) — a symlink anywhere on the
// way that leads out of the volume (absolute, or through '..') fails with
// EXDEV — and the opened fd, not the path, is bind-mounted through
// /proc/self/fd/N, so a symlink swapped in after the check cannot redirect
// the mount (the kubelet's doBindSubPath does the same with its own walk).
// Missing directories on the way are created beneath the root the same way.
// Targets live at <PodsDir>/<uid>/volume-subpaths/<volume>/<container>/<index>.

const subPathsDirName = "volume-subpaths"

// validateSubPath rejects absolute paths and '..' elements outright.
func validateSubPath(p string) error {
	if filepath.IsAbs(p) {
		return fmt.Errorf("subPath %q must be a relative path", p)
	}
	for _, el := range strings.Split(filepath.ToSlash(p), "/") {
		if el == ".." {
			return fmt.Errorf("subPath %q must not contain '..'", p)
		}
	}
	return nil
}

var resolveBeneath = &unix.OpenHow{
	Flags:   unix.O_PATH | unix.O_CLOEXEC,
	Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
}

// openBeneath opens sub beneath root as an O_PATH fd, creating missing
// directories on the way with the mode of the volume's root, setgid and
// sticky included (the kubelet's makeMounts: GetMode of the volume, then
// SafeMakeDir with it), so a subPath of an fsGroup volume is as writable
// for the group, and its files get the group, as the volume is. The
// caller closes the fd.
func openBeneath(root, sub string) (int, error) {
	if err := validateSubPath(sub); err != nil {
		return -1, err
	}
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open volume root %s: %w", root, err)
	}
	defer unix.Close(rootFd)
	sub = filepath.Clean(sub)
	if sub == "." {
		return unix.Openat2(rootFd, ".", resolveBeneath)
	}
	fd, err := unix.Openat2(rootFd, sub, resolveBeneath)
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return -1, subPathErr(sub, err)
	}
	// Create the missing directories one element at a time, each parent
	// opened beneath the root.
	var rootSt unix.Stat_t
	if err := unix.Fstat(rootFd, &rootSt); err != nil {
		return -1, fmt.Errorf("stat volume root %s: %w", root, err)
	}
	perm := rootSt.Mode & 0o7777
	els := strings.Split(sub, "/")
	for i := range els {
		prefix := strings.Join(els[:i+1], "/")
		fd, err := unix.Openat2(rootFd, prefix, resolveBeneath)
		if err == nil {
			if i == len(els)-1 {
				return fd, nil
			}
			unix.Close(fd)
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, subPathErr(sub, err)
		}
		parent := "."
		if i > 0 {
			parent = strings.Join(els[:i], "/")
		}
		how := *resolveBeneath
		how.Flags |= unix.O_DIRECTORY
		pfd, err := unix.Openat2(rootFd, parent, &how)
		if err != nil {
			return -1, subPathErr(sub, err)
		}
		err = unix.Mkdirat(pfd, els[i], perm)
		if err == nil {
			// mkdirat's mode went through the umask: set it exactly, on
			// the directory just made (O_NOFOLLOW: not on a symlink put
			// in its place since).
			err = fchmodAt(pfd, els[i], perm)
		} else if errors.Is(err, unix.EEXIST) {
			err = nil
		}
		unix.Close(pfd)
		if err != nil {
			return -1, fmt.Errorf("subPath %q: mkdir %s: %w", sub, prefix, err)
		}
	}
	return unix.Openat2(rootFd, sub, resolveBeneath)
}

// fchmodAt sets the mode of the directory name in dirFd, never through a
// symlink.
func fchmodAt(dirFd int, name string, mode uint32) error {
	fd, err := unix.Openat(dirFd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fchmod(fd, mode)
}

func subPathErr(sub string, err error) error {
	if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ELOOP) {
		return fmt.Errorf("subPath %q escapes the volume: %w", sub, err)
	}
	return fmt.Errorf("subPath %q: %w", sub, err)
}

// bindSubPath bind-mounts sub (beneath root) at target and returns target.
// An existing mount at target is kept (SetupPod is called again for a
// running pod).
func bindSubPath(root, sub, target string, ro bool) error {
	if mounted, err := isMountPoint(target); err != nil {
		return err
	} else if mounted {
		return nil
	}
	fd, err := openBeneath(root, sub)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := os.Mkdir(target, 0o750); err != nil && !os.IsExist(err) {
			return err
		}
	} else {
		f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o640)
		if err != nil {
			return err
		}
		f.Close()
	}
	src := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := bindMount(src, target, ro); err != nil {
		os.Remove(target)
		return fmt.Errorf("subPath %q: %w", sub, err)
	}
	return nil
}

// cleanupSubPaths unmounts and removes every subPath target of a pod.
func cleanupSubPaths(podDir string) error {
	dir := filepath.Join(podDir, subPathsDirName)
	ms, err := mountsBeneath(dir)
	if err != nil {
		return err
	}
	for _, mp := range ms {
		if err := unmountAll(mp); err != nil {
			return err
		}
	}
	return removeDirSafely(dir)
}

// containerEnv is the environment subPathExpr expands against: the one the
// container gets (downward.Environment, which the agent uses too), as the
// kubelet's makeMounts expands against makeEnvironmentVariables. So envFrom
// counts, and a missing ConfigMap, Secret or key that is not optional is an
// error; an optional one leaves its variable unset.
//
// The pod's and node's IPs (status.podIP(s), status.hostIP(s)) come from
// the pod's status: volumes are set up before the pod's sandbox exists, and
// the agent passes its pod without status, so they are usually empty here
// and a subPathExpr using them fails as "missing value" (the kubelet, which
// builds mounts after the sandbox, has them).
func containerEnv(pod *v1.Pod, c *v1.Container, objs *Objects) (map[string]string, error) {
	ctx := downward.FromStatus(pod)
	ctx.Objects = (*objects.Objects)(objs) // same shape; its lookups are nil-safe
	ctx.Node = nodeAllocatable()
	env, err := downward.Environment(pod, c, ctx)
	if err != nil {
		return nil, fmt.Errorf("environment for subPathExpr: %w", err)
	}
	return downward.EnvMap(env), nil
}

// expandSubPathExpr expands a subPathExpr with downward.Expand, as the
// kubelet's ExpandContainerVolumeMounts: a reference to a variable that is
// unset or empty is an error naming it; the result must be a valid subPath.
func expandSubPathExpr(expr string, env map[string]string) (string, error) {
	missing := map[string]bool{}
	out := downward.Expand(expr, func(k string) string {
		v := env[k]
		if v == "" {
			missing[k] = true
		}
		return v
	})
	if len(missing) > 0 {
		names := make([]string, 0, len(missing))
		for k := range missing {
			names = append(names, k)
		}
		sort.Strings(names)
		return "", fmt.Errorf("subPathExpr %q: missing value for %s", expr, strings.Join(names, ", "))
	}
	if err := validateSubPath(out); err != nil {
		return "", err
	}
	return out, nil
}
