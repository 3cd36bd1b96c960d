package spec

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// SandboxOOMScoreAdj is the oom_score_adj the kubelet expects for the
// infra container (before clamping to MinOOMScoreAdj).
const SandboxOOMScoreAdj = -998

// PauseUser is the uid and gid of a pause whose pod names no user.
const PauseUser = 65535

// SandboxCPUShares is the pause container's cpu.shares (containerd's).
const SandboxCPUShares = 2

// SandboxInput is everything Sandbox needs to build the pause container.
type SandboxInput struct {
	ID         string
	Config     *runtimeapi.PodSandboxConfig
	RootfsPath string   // peapod's own minimal pause rootfs (mounted read-only)
	PauseArgs  []string // argv of the pause process
	ImageName  string   // for the image-name annotation (may be empty)
	Namespaces Namespaces
	// Sandbox files the pause itself sees, read-only: /dev/shm (as
	// containerd mounts it), /etc/resolv.conf and /etc/hostname. "" = skip.
	ShmPath, ResolvPath, HostnamePath string
	CgroupsPath                       string

	MinOOMScoreAdj     int
	SeccompProfileRoot string
	CgroupNS           bool
}

// SandboxNamespaces fills Namespaces for the pause container: network NODE
// → host net and UTS, else join netnsPath (the pinned netns; it must be
// given); ipc NODE → host, else new; pid NODE → host, else new (with POD
// the containers join it; with CONTAINER they each get their own).
func SandboxNamespaces(opt *runtimeapi.NamespaceOption, netnsPath string) (Namespaces, error) {
	const field = "linux.security_context.namespace_options"
	var n Namespaces
	if opt.GetNetwork() == runtimeapi.NamespaceMode_NODE {
		n.HostNet, n.HostUTS = true, true
	} else {
		if netnsPath == "" && !userNSRequested(opt) {
			return n, errors.New("spec: sandbox needs a network namespace path")
		}
		// With a user namespace netnsPath may be empty: the pause makes
		// the netns inside it.
		n.Net = netnsPath
	}
	n.HostIPC = opt.GetIpc() == runtimeapi.NamespaceMode_NODE
	n.HostPID = opt.GetPid() == runtimeapi.NamespaceMode_NODE
	if opt.GetPid() == runtimeapi.NamespaceMode_TARGET {
		return n, fieldErr(field+".pid", "TARGET is not valid for a sandbox")
	}
	u, err := PodUserNS(opt.GetUsernsOptions(), field+".userns_options")
	if err != nil {
		return n, err
	}
	if u.Enabled() {
		// The kubelet refuses hostUsers: false with any host namespace: a
		// host namespace is owned by the host's user namespace, so pod root
		// could not administer it.
		for _, h := range []struct {
			host bool
			what string
		}{{n.HostNet, "network"}, {n.HostIPC, "ipc"}, {n.HostPID, "pid"}} {
			if h.host {
				return n, fieldErr(field+".userns_options.mode", "POD user namespace with the host %s namespace (%s NODE)", h.what, field+"."+h.what)
			}
		}
		n.UserNS = u
	}
	return n, nil
}

func userNSRequested(opt *runtimeapi.NamespaceOption) bool {
	u := opt.GetUsernsOptions()
	return u != nil && u.GetMode() == runtimeapi.NamespaceMode_POD
}

// ipcSysctl reports whether a sysctl is namespaced by the IPC namespace.
func ipcSysctl(k string) bool {
	switch k {
	case "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
		"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni":
		return true
	}
	return strings.HasPrefix(k, "fs.mqueue.")
}

// validateSysctls refuses sysctls that would change the host: net.* with
// the host network, IPC ones with the host IPC namespace, and the UTS ones
// with the host UTS namespace. Names may use "/" as separator (the kubelet
// allows it); they are normalized to dots.
func validateSysctls(in map[string]string, n Namespaces) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(in))
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := k
		if i := strings.IndexAny(name, "./"); i >= 0 && name[i] == '/' {
			// The kubelet's slash form: "net/ipv4/conf/eth0.100/forwarding"
			// is "net.ipv4.conf.eth0/100.forwarding".
			name = strings.Map(func(r rune) rune {
				switch r {
				case '/':
					return '.'
				case '.':
					return '/'
				}
				return r
			}, name)
		}
		field := fmt.Sprintf("linux.sysctls[%q]", k)
		switch {
		case strings.HasPrefix(name, "net."):
			if n.HostNet {
				return nil, fieldErr(field, "net.* sysctls are not allowed with the host network")
			}
		case ipcSysctl(name):
			if n.HostIPC {
				return nil, fieldErr(field, "IPC sysctls are not allowed with the host IPC namespace")
			}
		case name == "kernel.hostname" || name == "kernel.domainname":
			if n.HostUTS {
				return nil, fieldErr(field, "UTS sysctls are not allowed with the host UTS namespace")
			}
		default:
			return nil, fieldErr(field, "not a namespaced sysctl")
		}
		out[name] = in[k]
	}
	return out, nil
}

// Sandbox builds the spec of the pause (infra) container: the pause
// process as the sandbox's run_as_user/run_as_group (root by default) with
// no capabilities and no_new_privileges; read-only rootfs; new IPC/UTS
// (and PID) namespaces unless NODE, joining the given netns; the pod's
// hostname (only with its own UTS namespace); the pod's sysctls;
// cpu.shares 2; oom_score_adj -998 raised to MinOOMScoreAdj (Warnings say
// so); seccomp per the sandbox security context.
//
// Warnings are logged (klog, V(2)); SandboxWithWarnings returns them instead.
func Sandbox(in SandboxInput) (*specs.Spec, error) {
	s, w, err := SandboxWithWarnings(in)
	for _, m := range w {
		klog.V(2).InfoS("Sandbox spec adjusted", "id", in.ID, "warning", m)
	}
	return s, err
}

// SandboxWithWarnings is Sandbox returning its warnings to the caller.
func SandboxWithWarnings(in SandboxInput) (*specs.Spec, Warnings, error) {
	var w Warnings
	cfg := in.Config
	if cfg == nil {
		return nil, nil, errors.New("spec: nil sandbox config")
	}
	if len(in.PauseArgs) == 0 {
		return nil, nil, errors.New("spec: no pause command")
	}
	if in.RootfsPath == "" {
		return nil, nil, errors.New("spec: no rootfs path")
	}
	sc := cfg.GetLinux().GetSecurityContext()
	const scf = "linux.security_context."

	// The pause runs as the pod asks, else as the pause image's USER
	// (65535:65535 since pause 3.x), which is what containerd runs it as.
	uid, gid := uint32(PauseUser), uint32(PauseUser)
	if u := sc.GetRunAsUser(); u != nil {
		if u.GetValue() < 0 || u.GetValue() > math.MaxUint32 {
			return nil, nil, fieldErr(scf+"run_as_user", "uid %d out of range", u.GetValue())
		}
		// A uid alone runs with gid 0, as the pause image has no /etc/passwd.
		uid, gid = uint32(u.GetValue()), 0
	}
	if g := sc.GetRunAsGroup(); g != nil {
		if g.GetValue() < 0 || g.GetValue() > math.MaxUint32 {
			return nil, nil, fieldErr(scf+"run_as_group", "gid %d out of range", g.GetValue())
		}
		gid = uint32(g.GetValue())
	}
	gids := []uint32{gid}
	for _, g := range sc.GetSupplementalGroups() {
		if g < 0 || g > math.MaxUint32 {
			return nil, nil, fieldErr(scf+"supplemental_groups", "gid %d out of range", g)
		}
		gids = append(gids, uint32(g))
	}
	slices.Sort(gids)
	gids = slices.Compact(gids)

	sysctls, err := validateSysctls(cfg.GetLinux().GetSysctls(), in.Namespaces)
	if err != nil {
		return nil, nil, err
	}

	noCaps := &specs.LinuxCapabilities{Bounding: []string{}, Effective: []string{}, Permitted: []string{}}
	adj := clampOOM(SandboxOOMScoreAdj, in.MinOOMScoreAdj, "sandbox oom_score_adj", &w)
	shares := uint64(SandboxCPUShares)
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User:            specs.User{UID: uid, GID: gid, AdditionalGids: gids},
			Args:            slices.Clone(in.PauseArgs),
			Env:             []string{"PATH=" + DefaultPath},
			Cwd:             "/",
			Capabilities:    noCaps,
			NoNewPrivileges: true,
			OOMScoreAdj:     &adj,
		},
		Root: &specs.Root{Path: in.RootfsPath, Readonly: true},
		Linux: &specs.Linux{
			CgroupsPath: in.CgroupsPath,
			Namespaces:  in.Namespaces.linuxNamespaces(in.CgroupNS),
			Sysctl:      sysctls,
			Resources: &specs.LinuxResources{
				Devices: defaultDeviceRules(),
				CPU:     &specs.LinuxCPU{Shares: &shares},
			},
			MaskedPaths:   slices.Clone(DefaultMaskedPaths),
			ReadonlyPaths: slices.Clone(DefaultReadonlyPaths),
		},
	}
	in.Namespaces.setUserNS(s)
	if !in.Namespaces.HostUTS && in.Namespaces.UTS == "" {
		// runc refuses a hostname without a private UTS namespace.
		s.Hostname = cfg.GetHostname()
	}

	// Mounts: the defaults, with the sandbox /dev/shm (read-only for the
	// pause, as containerd mounts it) and resolv.conf.
	var files []sandboxFile
	if in.ShmPath != "" {
		files = append(files, sandboxFile{src: in.ShmPath, dst: "/dev/shm", ro: true})
	}
	if in.ResolvPath != "" {
		files = append(files, sandboxFile{src: in.ResolvPath, dst: "/etc/resolv.conf", ro: true})
	}
	if in.HostnamePath != "" {
		files = append(files, sandboxFile{src: in.HostnamePath, dst: "/etc/hostname", ro: true})
	}
	s.Mounts, _, err = containerMounts(nil, nil, files, false)
	if err != nil {
		return nil, nil, err
	}
	for i := range s.Mounts {
		if s.Mounts[i].Type == "bind" {
			s.Mounts[i].Options = append(s.Mounts[i].Options, "nosuid", "nodev", "noexec")
		}
	}

	s.Linux.Seccomp, err = seccompProfile(sc.GetSeccomp(), sc.GetSeccompProfilePath(), sc.GetPrivileged(), noCaps, in.SeccompProfileRoot, scf)
	if err != nil {
		return nil, nil, err
	}
	if err := apparmor(sc.GetApparmor(), "", false, scf, &w); err != nil {
		return nil, nil, err
	}

	md := cfg.GetMetadata()
	ours := map[string]string{
		AnnotationContainerType:    ContainerTypeSandbox,
		AnnotationSandboxID:        in.ID,
		AnnotationSandboxName:      md.GetName(),
		AnnotationSandboxNamespace: md.GetNamespace(),
		AnnotationSandboxUID:       md.GetUid(),
		AnnotationSandboxLogDir:    cfg.GetLogDirectory(),
		AnnotationImageName:        in.ImageName,
	}
	if r := cfg.GetLinux().GetResources(); r != nil {
		ours[AnnotationSandboxCPUPeriod] = strconv.FormatInt(r.GetCpuPeriod(), 10)
		ours[AnnotationSandboxCPUQuota] = strconv.FormatInt(r.GetCpuQuota(), 10)
		ours[AnnotationSandboxCPUShares] = strconv.FormatInt(r.GetCpuShares(), 10)
		ours[AnnotationSandboxMemory] = strconv.FormatInt(r.GetMemoryLimitInBytes(), 10)
	}
	s.Annotations = annotations(cfg.GetAnnotations(), ours)
	return s, w, nil
}
