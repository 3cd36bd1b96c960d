package volumes

import (
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
// directories (0755) on the way. The caller closes the fd.
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
		err = unix.Mkdirat(pfd, els[i], 0o755)
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("subPath %q: mkdir %s: %w", sub, prefix, err)
		}
	}
	return unix.Openat2(rootFd, sub, resolveBeneath)
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

// containerEnv computes a container's environment for subPathExpr the way
// the kubelet does: values in order, each expanded against the earlier ones;
// fieldRef, configMapKeyRef and secretKeyRef resolved.
func containerEnv(pod *v1.Pod, c *v1.Container, objs *Objects) (map[string]string, error) {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expandVars(e.Value, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		case e.ValueFrom.FieldRef != nil:
			v, err := downward.FieldValue(pod, e.ValueFrom.FieldRef.FieldPath, downward.FromStatus(pod))
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			env[e.Name] = v
		case e.ValueFrom.ResourceFieldRef != nil:
			v, err := downward.ResourceValue(pod, c, e.ValueFrom.ResourceFieldRef, nodeAllocatable())
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			env[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			r := e.ValueFrom.ConfigMapKeyRef
			if cm := objs.configMap(pod.Namespace, r.Name); cm != nil {
				if v, ok := configMapData(cm)[r.Key]; ok {
					env[e.Name] = string(v)
				}
			}
		case e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			if s := objs.secret(pod.Namespace, r.Name); s != nil {
				if v, ok := secretData(s)[r.Key]; ok {
					env[e.Name] = string(v)
				}
			}
		}
	}
	return env, nil
}

// expandVars expands $(VAR) references; $$ is a literal $; an unknown
// reference is left as written.
func expandVars(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// expandSubPathExpr expands a subPathExpr; a reference to a variable that
// is unset or empty is an error, as in the kubelet.
func expandSubPathExpr(expr string, env map[string]string) (string, error) {
	var missing []string
	out := expandVars(expr, func(k string) (string, bool) {
		v, ok := env[k]
		if !ok || v == "" {
			missing = append(missing, k)
			return "", true
		}
		return v, true
	})
	if len(missing) > 0 {
		sort.Strings(missing)
		return "", fmt.Errorf("subPathExpr %q: missing value for %s", expr, strings.Join(missing, ", "))
	}
	if err := validateSubPath(out); err != nil {
		return "", err
	}
	return out, nil
}
