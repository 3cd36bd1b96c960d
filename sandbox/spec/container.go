package spec

import (
	"errors"
	"fmt"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DefaultMaskedPaths and DefaultReadonlyPaths are used when the CRI request
// does not list its own (containerd's defaults).
var (
	DefaultMaskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/proc/scsi", "/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
	DefaultReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// ContainerInput is everything Container needs. Config, Sandbox and
// RootfsPath are required; the rest may be zero.
type ContainerInput struct {
	ID        string
	SandboxID string
	Config    *runtimeapi.ContainerConfig
	Sandbox   *runtimeapi.PodSandboxConfig
	Image     *v1.Config // the image config: Entrypoint, Cmd, Env, WorkingDir, User
	ImageName string     // for the image-name annotation; default Config.Image.Image

	RootfsPath string     // the mounted rootfs: root.path, and where /etc/passwd and /etc/group are read
	Namespaces Namespaces // see PodNamespaces

	// Per-sandbox files bind-mounted at /etc/hosts, /etc/hostname,
	// /etc/resolv.conf and /dev/shm ("" = skip; a CRI mount at the same
	// destination wins).
	HostsPath, HostnamePath, ResolvPath, ShmPath string

	// LXCFSDir is lxcfs's mount point ("" = no lxcfs); each of LXCFSPaths
	// (container paths, e.g. /proc/meminfo) gets lxcfs's file at
	// LXCFSDir/<path> bound over it, unless a CRI mount covers the path.
	LXCFSDir   string
	LXCFSPaths []string

	// ImageVolumes: for each CRI mount that is an image volume (by index
	// into Config.Mounts), the host path it binds read-only: the image's
	// mounted rootfs, or image_sub_path resolved inside it (the caller's
	// job: it needs the kernel).
	ImageVolumes map[int]string

	CgroupsPath string // cgroupfs path, e.g. /kubepods/besteffort/pod<uid>/<id>
	// NodeHostname is the HOSTNAME env of containers of a pod whose config
	// has no hostname (host network pods).
	NodeHostname string

	// Host facts.
	MinOOMScoreAdj     int    // peapod's own oom_score_adj: never ask for less
	SeccompProfileRoot string // Localhost profiles must resolve inside it ("" = anywhere)
	// HostCaps are the caps peapod holds: "ALL" and privileged grant no
	// more. nil = CurrentCapabilities() (read once per process).
	HostCaps []string
	// HostDevices are the device nodes a privileged container gets. nil =
	// HostDevices() (walks /dev on each privileged create); empty = none.
	HostDevices      []specs.LinuxDevice
	CgroupNS         bool // give the container a cgroup namespace (pure cgroup v2 hosts)
	NoSwapAccounting bool // the memory cgroup has no swap limit (no memory.memsw.* on v1)
	// NoHugetlb: the OCI runtime cannot set hugetlb limits on this host (no
	// hugetlb hierarchy it uses). The kubelet sends a limit for every page
	// size the kernel has, 0 when the pod asks for none; they are dropped,
	// as CRI-O and containerd (tolerate_missing_hugetlb_controller) do.
	NoHugetlb       bool
	AppArmorEnabled bool // false here: see apparmor
}

// Container builds the OCI spec of a container of a pod. Warnings list
// adjustments the caller should log once (an oom_score_adj raised to
// MinOOMScoreAdj, an AppArmor profile ignored). Errors caused by the
// request are *FieldError.
func Container(in ContainerInput) (*specs.Spec, Warnings, error) {
	var w Warnings
	cfg := in.Config
	if cfg == nil {
		return nil, nil, errors.New("spec: nil container config")
	}
	if in.RootfsPath == "" {
		return nil, nil, errors.New("spec: no rootfs path")
	}
	img := in.Image
	if img == nil {
		img = &v1.Config{}
	}
	sc := cfg.GetLinux().GetSecurityContext()
	const scf = "linux.security_context."
	privileged := sc.GetPrivileged()
	if privileged && !in.Sandbox.GetLinux().GetSecurityContext().GetPrivileged() {
		return nil, nil, fieldErr(scf+"privileged", "privileged container in a sandbox that is not privileged")
	}

	args, err := Command(cfg, img)
	if err != nil {
		return nil, nil, err
	}
	hostname := in.Sandbox.GetHostname()
	if hostname == "" {
		hostname = in.NodeHostname
	}
	uid, gid, gids, err := ResolveUser(in.RootfsPath, sc, img.User)
	if err != nil {
		return nil, nil, err
	}
	hostCaps := in.HostCaps
	if hostCaps == nil {
		hostCaps = ownCaps()
	}
	caps, err := capabilities(sc.GetCapabilities(), privileged, hostCaps, &w)
	if err != nil {
		return nil, nil, err
	}
	cwd, err := WorkingDir(cfg, img)
	if err != nil {
		return nil, nil, err
	}

	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Terminal:        cfg.GetTty(),
			User:            specs.User{UID: uid, GID: gid, AdditionalGids: gids},
			Args:            args,
			Env:             Env(cfg, img, hostname),
			Cwd:             cwd,
			Capabilities:    caps,
			NoNewPrivileges: sc.GetNoNewPrivs(),
		},
		Root: &specs.Root{Path: in.RootfsPath, Readonly: sc.GetReadonlyRootfs()},
		Linux: &specs.Linux{
			CgroupsPath: in.CgroupsPath,
			Namespaces:  in.Namespaces.linuxNamespaces(in.CgroupNS),
		},
	}
	in.Namespaces.setUserNS(s)

	if err := apparmor(sc.GetApparmor(), sc.GetApparmorProfile(), in.AppArmorEnabled, scf, &w); err != nil {
		return nil, nil, err
	}
	s.Linux.Seccomp, err = seccompProfile(sc.GetSeccomp(), sc.GetSeccompProfilePath(), privileged, caps, in.SeccompProfileRoot, scf)
	if err != nil {
		return nil, nil, err
	}

	// In a pod with a user namespace the pod's files are idmapped, so
	// container root owns them as it would without one; /dev/shm is a
	// tmpfs the sandbox mounted mode 1777, usable by anyone as it is;
	// lxcfs's files are FUSE, which cannot be idmapped (read-only anyway).
	files := []sandboxFile{
		{src: in.HostnamePath, dst: "/etc/hostname", ro: sc.GetReadonlyRootfs(), idmap: true},
		{src: in.HostsPath, dst: "/etc/hosts", ro: sc.GetReadonlyRootfs(), idmap: true},
		{src: in.ResolvPath, dst: "/etc/resolv.conf", ro: sc.GetReadonlyRootfs(), idmap: true},
		{src: in.ShmPath, dst: "/dev/shm"},
	}
	files = append(files, lxcfsFiles(cfg.GetMounts(), in.LXCFSDir, in.LXCFSPaths)...)
	s.Mounts, s.Linux.RootfsPropagation, err = containerMountsUserNS(cfg.GetMounts(), in.ImageVolumes, files, privileged, in.Namespaces.UserNS)
	if err != nil {
		return nil, nil, err
	}

	// Resources and devices.
	res := Resources(cfg.GetLinux().GetResources())
	if res == nil {
		res = &specs.LinuxResources{}
	}
	if in.NoSwapAccounting && res.Memory != nil {
		res.Memory.Swap = nil
	}
	if in.NoHugetlb {
		res.HugepageLimits = DropHugepageLimits(res.HugepageLimits, "linux.resources.hugepage_limits", &w)
	}
	nodes, rules, err := criDevices(cfg.GetDevices())
	if err != nil {
		return nil, nil, err
	}
	if privileged {
		hostDevs := in.HostDevices
		if hostDevs == nil {
			if hostDevs, err = HostDevices(); err != nil {
				return nil, nil, fmt.Errorf("list host devices for a privileged container: %w", err)
			}
		}
		s.Linux.Devices = slices.Clone(hostDevs)
		res.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		res.Devices = defaultDeviceRules()
	}
	for _, n := range nodes {
		s.Linux.Devices = slices.DeleteFunc(s.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == n.Path })
		s.Linux.Devices = append(s.Linux.Devices, n)
	}
	res.Devices = append(res.Devices, rules...)
	s.Linux.Resources = res

	if !privileged {
		s.Linux.MaskedPaths = DefaultMaskedPaths
		if p := sc.GetMaskedPaths(); p != nil {
			s.Linux.MaskedPaths = p
		}
		s.Linux.ReadonlyPaths = DefaultReadonlyPaths
		if p := sc.GetReadonlyPaths(); p != nil {
			s.Linux.ReadonlyPaths = p
		}
		s.Linux.MaskedPaths = slices.Clone(s.Linux.MaskedPaths)
		s.Linux.ReadonlyPaths = slices.Clone(s.Linux.ReadonlyPaths)
	}

	if r := cfg.GetLinux().GetResources(); r != nil {
		adj := clampOOM(int(r.GetOomScoreAdj()), in.MinOOMScoreAdj, "linux.resources.oom_score_adj", &w)
		s.Process.OOMScoreAdj = &adj
	}

	imageName := in.ImageName
	if imageName == "" {
		imageName = cfg.GetImage().GetImage()
	}
	md := in.Sandbox.GetMetadata()
	s.Annotations = annotations(cfg.GetAnnotations(), map[string]string{
		AnnotationContainerType:    ContainerTypeContainer,
		AnnotationContainerName:    cfg.GetMetadata().GetName(),
		AnnotationSandboxID:        in.SandboxID,
		AnnotationSandboxName:      md.GetName(),
		AnnotationSandboxNamespace: md.GetNamespace(),
		AnnotationSandboxUID:       md.GetUid(),
		AnnotationImageName:        imageName,
	})
	return s, w, nil
}

// clampOOM raises adj to min (this host forbids lowering oom_score_adj below
// peapod's own; containerd's restrict_oom_score_adj).
func clampOOM(adj, min int, field string, w *Warnings) int {
	if adj < min {
		w.add("%s: %d raised to %d (peapod's own oom_score_adj; lowering it is not permitted here)", field, adj, min)
		return min
	}
	return adj
}

// apparmor validates the AppArmor request. peapod applies no AppArmor
// profile. On a host without AppArmor (this one), containerd fails every
// profile but Unconfined ("apparmor is not supported"); CRI-O ignores
// them. peapod takes the middle: Unconfined and RuntimeDefault (the
// kubelet's default intent, and there is no default to apply) pass — the
// latter with a warning — and Localhost, which asks for a specific
// confinement that cannot be given, fails. On an AppArmor host peapod would
// still fail Localhost and warn on RuntimeDefault, as it loads no profiles.
func apparmor(p *runtimeapi.SecurityProfile, legacy string, enabled bool, prefix string, w *Warnings) error {
	field := prefix + "apparmor"
	if p == nil && legacy != "" {
		field = prefix + "apparmor_profile"
		switch {
		case legacy == "runtime/default":
			p = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		case legacy == "unconfined":
			p = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
		case len(legacy) > len("localhost/") && legacy[:len("localhost/")] == "localhost/":
			p = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: legacy[len("localhost/"):]}
		default:
			return fieldErr(field, "invalid profile %q", legacy)
		}
	}
	if p == nil {
		return nil
	}
	switch p.GetProfileType() {
	case runtimeapi.SecurityProfile_Unconfined:
		return nil
	case runtimeapi.SecurityProfile_RuntimeDefault:
		if enabled {
			w.add("%s: RuntimeDefault requested; peapod loads no AppArmor profile, running unconfined", field)
		} else {
			w.add("%s: RuntimeDefault requested but AppArmor is not enabled on this host; running unconfined", field)
		}
		return nil
	case runtimeapi.SecurityProfile_Localhost:
		return fieldErr(field, "Localhost profile %q requested but AppArmor is not supported by peapod on this host", p.GetLocalhostRef())
	default:
		return fieldErr(field+".profile_type", "unknown profile type %d", p.GetProfileType())
	}
}
