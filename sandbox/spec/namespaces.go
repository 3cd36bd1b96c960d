package spec

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Namespaces says, for each namespace type, whether to join a path, use
// the host's, or create a new one: Host* true → the spec has no entry (the
// runtime's own, i.e. the node's); else a non-empty path → join it; else →
// a new namespace.
//
// User is the pod's user namespace: with UserNS enabled, a sandbox gets a
// new one with those mappings, a container joins the path User (the
// pause's) and carries the same mappings.
type Namespaces struct {
	Net, IPC, UTS, PID                 string
	HostNet, HostIPC, HostUTS, HostPID bool
	User                               string
	UserNS                             UserNS
}

// PodNamespaces fills Namespaces for a container from its NamespaceOption
// (nil: all POD), the way containerd's CRI plugin does:
//
//	network NODE → host net and host UTS; else join netnsPath (the pinned
//	  /run/netns/<x>, or /proc/<pause>/ns/net when empty) and the pause's UTS
//	ipc     NODE → host; else join the pause's
//	pid     NODE → host; POD → join the pause's; CONTAINER → new;
//	        TARGET → join /proc/<targetPID>/ns/pid (targetPID must be > 0)
//
//	userns  the sandbox's: sbUserNS enabled → join /proc/<pause>/ns/user;
//	        the container's own option must agree (POD in a POD sandbox,
//	        NODE or none in a NODE one)
func PodNamespaces(opt *runtimeapi.NamespaceOption, pausePID, targetPID int, netnsPath string, sbUserNS UserNS) (Namespaces, error) {
	const field = "linux.security_context.namespace_options"
	proc := func(pid int, ns string) string { return fmt.Sprintf("/proc/%d/ns/%s", pid, ns) }
	var n Namespaces
	switch opt.GetNetwork() {
	case runtimeapi.NamespaceMode_NODE:
		n.HostNet, n.HostUTS = true, true
	case runtimeapi.NamespaceMode_POD:
		n.Net = netnsPath
		if n.Net == "" {
			n.Net = proc(pausePID, "net")
		}
		n.UTS = proc(pausePID, "uts")
	default:
		return n, fieldErr(field+".network", "unsupported mode %s", opt.GetNetwork())
	}
	switch opt.GetIpc() {
	case runtimeapi.NamespaceMode_NODE:
		n.HostIPC = true
	case runtimeapi.NamespaceMode_POD:
		n.IPC = proc(pausePID, "ipc")
	default:
		return n, fieldErr(field+".ipc", "unsupported mode %s", opt.GetIpc())
	}
	switch opt.GetPid() {
	case runtimeapi.NamespaceMode_NODE:
		n.HostPID = true
	case runtimeapi.NamespaceMode_POD:
		n.PID = proc(pausePID, "pid")
	case runtimeapi.NamespaceMode_CONTAINER:
	case runtimeapi.NamespaceMode_TARGET:
		if targetPID <= 0 {
			return n, fieldErr(field+".target_id", "target container %q is not running", opt.GetTargetId())
		}
		n.PID = proc(targetPID, "pid")
	default:
		return n, fieldErr(field+".pid", "unsupported mode %s", opt.GetPid())
	}
	u, err := PodUserNS(opt.GetUsernsOptions(), field+".userns_options")
	if err != nil {
		return n, err
	}
	switch {
	case u.Enabled() && !sbUserNS.Enabled():
		return n, fieldErr(field+".userns_options.mode", "POD in a sandbox that runs in the host user namespace")
	case !u.Enabled() && sbUserNS.Enabled() && opt.GetUsernsOptions() != nil:
		return n, fieldErr(field+".userns_options.mode", "NODE in a sandbox with its own user namespace")
	case sbUserNS.Enabled():
		// The pod's mappings, not the container's: the pause's namespace
		// has them, whatever the container config says (it should agree).
		n.User, n.UserNS = proc(pausePID, "user"), sbUserNS
	}
	return n, nil
}

// linuxNamespaces renders n as OCI namespaces, always with a new mount
// namespace first; cgroupNS adds a new cgroup namespace (containerd does
// so on a pure cgroup v2 host only).
func (n Namespaces) linuxNamespaces(cgroupNS bool) []specs.LinuxNamespace {
	out := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	if n.UserNS.Enabled() {
		// First: the others are created inside it, and so owned by it.
		out = []specs.LinuxNamespace{{Type: specs.UserNamespace, Path: n.User}, {Type: specs.MountNamespace}}
	}
	add := func(t specs.LinuxNamespaceType, host bool, p string) {
		if !host {
			out = append(out, specs.LinuxNamespace{Type: t, Path: p})
		}
	}
	add(specs.NetworkNamespace, n.HostNet, n.Net)
	add(specs.IPCNamespace, n.HostIPC, n.IPC)
	add(specs.UTSNamespace, n.HostUTS, n.UTS)
	add(specs.PIDNamespace, n.HostPID, n.PID)
	if cgroupNS {
		out = append(out, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	return out
}

// setUserNS puts the pod's user namespace mappings into s (runc checks
// them against a namespace it joins).
func (n Namespaces) setUserNS(s *specs.Spec) {
	if !n.UserNS.Enabled() {
		return
	}
	s.Linux.UIDMappings = append([]specs.LinuxIDMapping(nil), n.UserNS.UIDs...)
	s.Linux.GIDMappings = append([]specs.LinuxIDMapping(nil), n.UserNS.GIDs...)
}
