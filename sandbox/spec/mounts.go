package spec

import (
	"fmt"
	"path"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// defaultMounts is containerd's default Linux mount set (without /run, which
// the CRI plugin removes) plus the cgroupfs mount it adds. Privileged
// containers get sysfs and cgroupfs read-write.
func defaultMounts(privileged bool) []specs.Mount {
	mode := "ro"
	if privileged {
		mode = "rw"
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", mode}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", mode}},
	}
}

// IsImageMount reports whether a CRI mount is an image volume
// (Mount.image names an image).
func IsImageMount(m *runtimeapi.Mount) bool { return m.GetImage().GetImage() != "" }

// CheckImageMount checks what an image volume mount asks for besides the
// image: no host_path (the two are exclusive), readonly set (image volumes
// are read-only by definition; containerd refuses the same, critest
// expects a refusal), an absolute container_path. field is "mounts[i]".
// The image and image_sub_path are the caller's to resolve.
func CheckImageMount(m *runtimeapi.Mount, field string) error {
	if m.GetHostPath() != "" {
		return fieldErr(field+".host_path", "must be empty when %s.image is set, got %q", field, m.GetHostPath())
	}
	if !m.GetReadonly() {
		return fieldErr(field+".readonly", "must be true: image volumes are read-only")
	}
	if dst := m.GetContainerPath(); dst == "" || !path.IsAbs(dst) {
		return fieldErr(field+".container_path", "must be an absolute path, got %q", dst)
	}
	return nil
}

// bindMount turns one CRI mount into an OCI bind mount. imageSrc is the
// host path an image volume mount binds (the caller mounted the image and
// resolved image_sub_path in it); "" for others. It returns the rootfs
// propagation the mount needs ("" for none).
//
// A mount with uid/gid mappings (the kubelet sets the pod's on every mount
// of a pod with a user namespace) becomes an idmapped mount: OCI
// uidMappings/gidMappings and "ridmap" (the whole rbind tree, runc >= 1.2).
// Only in a pod with its own user namespace (u), and not for an image
// volume: its source is an overlay, which the kernel cannot idmap; it stays
// read-only and owned by the overflow id inside.
func bindMount(m *runtimeapi.Mount, field, imageSrc string, u UserNS) (specs.Mount, string, error) {
	dst, src := m.GetContainerPath(), m.GetHostPath()
	if IsImageMount(m) {
		if err := CheckImageMount(m, field); err != nil {
			return specs.Mount{}, "", err
		}
		if imageSrc == "" {
			// The caller's bug, not the request's.
			return specs.Mount{}, "", fmt.Errorf("%s.image %q: no image volume was mounted for it", field, m.GetImage().GetImage())
		}
		src = imageSrc
	} else if m.GetImageSubPath() != "" {
		return specs.Mount{}, "", fieldErr(field+".image_sub_path", "is only valid with %s.image", field)
	}
	if dst == "" || !path.IsAbs(dst) {
		return specs.Mount{}, "", fieldErr(field+".container_path", "must be an absolute path, got %q", dst)
	}
	if src == "" {
		return specs.Mount{}, "", fieldErr(field+".host_path", "must not be empty")
	}
	idmapped := len(m.GetUidMappings()) > 0 || len(m.GetGidMappings()) > 0
	if idmapped {
		switch {
		case !u.Enabled():
			return specs.Mount{}, "", fieldErr(field+".uidMappings", "idmapped mounts need a pod with its own user namespace (namespace_options.userns_options mode POD)")
		case len(m.GetUidMappings()) == 0 || len(m.GetGidMappings()) == 0:
			return specs.Mount{}, "", fieldErr(field+".uidMappings", "an idmapped mount needs both uid and gid mappings")
		}
	}
	opts := []string{"rbind"}
	rootProp := ""
	switch m.GetPropagation() {
	case runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
		opts = append(opts, "rprivate")
	case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
		opts = append(opts, "rslave")
		rootProp = "rslave"
	case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
		opts = append(opts, "rshared")
		rootProp = "rshared"
	default:
		return specs.Mount{}, "", fieldErr(field+".propagation", "unknown propagation %d", m.GetPropagation())
	}
	switch {
	case m.GetReadonly() && m.GetRecursiveReadOnly():
		if m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
			return specs.Mount{}, "", fieldErr(field+".recursive_read_only", "needs private propagation, got %s", m.GetPropagation())
		}
		// runc >= 1.1 on Linux >= 5.12 (mount_setattr) turns "rro" into a
		// recursively read-only bind mount.
		opts = append(opts, "rro")
	case m.GetReadonly():
		opts = append(opts, "ro")
	case m.GetRecursiveReadOnly():
		return specs.Mount{}, "", fieldErr(field+".recursive_read_only", "conflicts with a read-write mount (set readonly too)")
	default:
		opts = append(opts, "rw")
	}
	// selinux_relabel is ignored: this kernel has no SELinux.
	om := specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}
	if idmapped && !IsImageMount(m) {
		om.UIDMappings = ociIDMappings(m.GetUidMappings())
		om.GIDMappings = ociIDMappings(m.GetGidMappings())
		om.Options = append(om.Options, "ridmap")
	}
	return om, rootProp, nil
}

// sandboxFile is a per-pod file bind-mounted into every container.
type sandboxFile struct {
	src, dst string
	ro       bool
	// opts replaces the bind's options ("rbind", "rprivate", rw/ro).
	opts []string
	// idmap: in a pod with a user namespace, mount it with the pod's
	// mapping (peapod's own files, owned by host root).
	idmap bool
}

// lxcfsOptions are those of lxcfs's binds: a plain bind (a file has no
// submounts), read-only as the files are, nothing to run or open as a
// device. sandbox/lxcfs sets the same flags on a bind it adds later.
var lxcfsOptions = []string{"bind", "ro", "nosuid", "nodev", "noexec"}

// LXCFSCovered reports whether a CRI mount is at container path p or
// above it: the pod's own mount wins over lxcfs's file.
func LXCFSCovered(criMounts []*runtimeapi.Mount, p string) bool {
	for _, m := range criMounts {
		d := path.Clean(m.GetContainerPath())
		if d == p || (d != "/" && strings.HasPrefix(p, d+"/")) {
			return true
		}
	}
	return false
}

// lxcfsFiles are lxcfs's files at paths (below dir) that no CRI mount
// covers.
func lxcfsFiles(criMounts []*runtimeapi.Mount, dir string, paths []string) []sandboxFile {
	if dir == "" {
		return nil
	}
	var out []sandboxFile
	for _, p := range paths {
		if !path.IsAbs(p) || path.Clean(p) != p || LXCFSCovered(criMounts, p) {
			continue
		}
		out = append(out, sandboxFile{src: path.Join(dir, p), dst: p, opts: lxcfsOptions})
	}
	return out
}

// containerMounts assembles the container's mounts: the defaults, minus
// those a CRI mount (or the sandbox /dev/shm) replaces and everything under
// /dev when /dev itself is supplied; the CRI mounts (an image volume binds
// imageVols[i]); the sandbox files not already covered by a CRI mount.
// Sorted by path depth (stable) so a parent is mounted before its children.
// Also returns the rootfs propagation.
func containerMounts(criMounts []*runtimeapi.Mount, imageVols map[int]string, files []sandboxFile, privileged bool) ([]specs.Mount, string, error) {
	return containerMountsUserNS(criMounts, imageVols, files, privileged, UserNS{})
}

// containerMountsUserNS is containerMounts in a pod whose user namespace
// is u (zero: the host's).
func containerMountsUserNS(criMounts []*runtimeapi.Mount, imageVols map[int]string, files []sandboxFile, privileged bool, u UserNS) ([]specs.Mount, string, error) {
	var supplied []specs.Mount
	rootProp := ""
	for i, m := range criMounts {
		om, p, err := bindMount(m, fmt.Sprintf("mounts[%d]", i), imageVols[i], u)
		if err != nil {
			return nil, "", err
		}
		// rshared beats rslave beats nothing.
		if p == "rshared" || (p == "rslave" && rootProp == "") {
			rootProp = p
		}
		supplied = append(supplied, om)
	}
	covered := func(dst string) bool {
		return slices.ContainsFunc(supplied, func(m specs.Mount) bool { return path.Clean(m.Destination) == path.Clean(dst) })
	}
	for _, f := range files {
		if f.src == "" || covered(f.dst) {
			continue
		}
		mode := "rw"
		if f.ro {
			mode = "ro"
		}
		opts := []string{"rbind", "rprivate", mode}
		if f.opts != nil {
			opts = slices.Clone(f.opts)
		}
		fm := specs.Mount{Destination: f.dst, Type: "bind", Source: f.src, Options: opts}
		if f.idmap && u.Enabled() {
			idmapMount(&fm, u)
		}
		supplied = append(supplied, fm)
	}
	devSupplied := covered("/dev")
	var out []specs.Mount
	for _, d := range defaultMounts(privileged) {
		if covered(d.Destination) || (devSupplied && strings.HasPrefix(d.Destination, "/dev/")) {
			continue
		}
		out = append(out, d)
	}
	out = append(out, supplied...)
	sortMounts(out)
	return out, rootProp, nil
}

func mountDepth(dst string) int {
	c := path.Clean(dst)
	if c == "/" {
		return 0
	}
	return strings.Count(c, "/")
}

// sortMounts orders mounts by the depth of their destination, keeping the
// given order among equals (Docker's and containerd's rule).
func sortMounts(ms []specs.Mount) {
	slices.SortStableFunc(ms, func(a, b specs.Mount) int {
		return mountDepth(a.Destination) - mountDepth(b.Destination)
	})
}
