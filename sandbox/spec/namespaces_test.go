package spec

import (
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestPodNamespaces(t *testing.T) {
	const (
		pod = runtimeapi.NamespaceMode_POD
		ctr = runtimeapi.NamespaceMode_CONTAINER
		nod = runtimeapi.NamespaceMode_NODE
		tgt = runtimeapi.NamespaceMode_TARGET
	)
	tests := []struct {
		name      string
		opt       *runtimeapi.NamespaceOption
		netns     string
		targetPID int
		sbUserNS  UserNS
		want      []specs.LinuxNamespace
		errField  string
	}{
		{
			name: "nil is all POD", opt: nil, netns: "/run/netns/p1",
			want: []specs.LinuxNamespace{
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: "/run/netns/p1"},
				{Type: specs.IPCNamespace, Path: "/proc/10/ns/ipc"}, {Type: specs.UTSNamespace, Path: "/proc/10/ns/uts"},
				{Type: specs.PIDNamespace, Path: "/proc/10/ns/pid"},
			},
		},
		{
			name: "POD net without pinned netns joins the pause", opt: &runtimeapi.NamespaceOption{Pid: ctr},
			want: []specs.LinuxNamespace{
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: "/proc/10/ns/net"},
				{Type: specs.IPCNamespace, Path: "/proc/10/ns/ipc"}, {Type: specs.UTSNamespace, Path: "/proc/10/ns/uts"},
				{Type: specs.PIDNamespace},
			},
		},
		{
			name: "all NODE", opt: &runtimeapi.NamespaceOption{Network: nod, Ipc: nod, Pid: nod}, netns: "/run/netns/x",
			want: []specs.LinuxNamespace{{Type: specs.MountNamespace}},
		},
		{
			name: "TARGET", opt: &runtimeapi.NamespaceOption{Pid: tgt, TargetId: "c1"}, netns: "/run/netns/p1", targetPID: 77,
			want: []specs.LinuxNamespace{
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: "/run/netns/p1"},
				{Type: specs.IPCNamespace, Path: "/proc/10/ns/ipc"}, {Type: specs.UTSNamespace, Path: "/proc/10/ns/uts"},
				{Type: specs.PIDNamespace, Path: "/proc/77/ns/pid"},
			},
		},
		{name: "TARGET not running", opt: &runtimeapi.NamespaceOption{Pid: tgt, TargetId: "c1"}, errField: "linux.security_context.namespace_options.target_id"},
		{name: "CONTAINER network unsupported", opt: &runtimeapi.NamespaceOption{Network: ctr}, errField: "linux.security_context.namespace_options.network"},
		{
			name: "userns POD joins the pause's", netns: "/run/netns/p1", sbUserNS: podUserNS,
			opt: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: criMapping, Gids: criMapping}},
			want: []specs.LinuxNamespace{
				{Type: specs.UserNamespace, Path: "/proc/10/ns/user"}, {Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: "/run/netns/p1"},
				{Type: specs.IPCNamespace, Path: "/proc/10/ns/ipc"}, {Type: specs.UTSNamespace, Path: "/proc/10/ns/uts"},
				{Type: specs.PIDNamespace, Path: "/proc/10/ns/pid"},
			},
		},
		{name: "userns POD without mappings", opt: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod}}, sbUserNS: podUserNS, errField: "linux.security_context.namespace_options.userns_options.uids"},
		{name: "userns POD in a host-userns sandbox", opt: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod, Uids: criMapping, Gids: criMapping}}, errField: "linux.security_context.namespace_options.userns_options.mode"},
		{name: "userns NODE in a POD-userns sandbox", opt: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: nod}}, sbUserNS: podUserNS, errField: "linux.security_context.namespace_options.userns_options.mode"},
		{name: "userns CONTAINER", opt: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: ctr}}, errField: "linux.security_context.namespace_options.userns_options.mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := PodNamespaces(tt.opt, 10, tt.targetPID, tt.netns, tt.sbUserNS)
			if tt.errField != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.errField+":") {
					t.Fatalf("want %s error, got %v", tt.errField, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := n.linuxNamespaces(false); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

var (
	criMapping = []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 1000, Length: 100000}}
	podUserNS  = UserNS{
		UIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 100000}},
		GIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 100000}},
	}
)

func TestPodUserNS(t *testing.T) {
	const f = "userns"
	m := func(c, h, l uint32) *runtimeapi.IDMapping {
		return &runtimeapi.IDMapping{ContainerId: c, HostId: h, Length: l}
	}
	pod, nod := runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_NODE
	tests := []struct {
		name     string
		u        *runtimeapi.UserNamespace
		want     UserNS
		errField string
	}{
		{name: "nil is the host's", u: nil},
		{name: "NODE", u: &runtimeapi.UserNamespace{Mode: nod}},
		{name: "NODE with mappings", u: &runtimeapi.UserNamespace{Mode: nod, Uids: criMapping}, errField: f},
		{name: "POD", u: &runtimeapi.UserNamespace{Mode: pod, Uids: criMapping, Gids: criMapping}, want: podUserNS},
		{name: "POD two ranges", u: &runtimeapi.UserNamespace{Mode: pod, Uids: []*runtimeapi.IDMapping{m(0, 1000, 100000), m(0, 2000, 100000)}, Gids: criMapping}, errField: f + ".uids"},
		{name: "POD root unmapped", u: &runtimeapi.UserNamespace{Mode: pod, Uids: criMapping, Gids: []*runtimeapi.IDMapping{m(1, 1000, 100000)}}, errField: f + ".gids[0].container_id"},
		{name: "POD zero length", u: &runtimeapi.UserNamespace{Mode: pod, Uids: []*runtimeapi.IDMapping{m(0, 1000, 0)}, Gids: criMapping}, errField: f + ".uids[0].length"},
		{name: "POD past 32 bits", u: &runtimeapi.UserNamespace{Mode: pod, Uids: []*runtimeapi.IDMapping{m(0, 1<<32-10, 100)}, Gids: criMapping}, errField: f + ".uids[0]"},
		{name: "CONTAINER", u: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}, errField: f + ".mode"},
		{name: "TARGET", u: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}, errField: f + ".mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PodUserNS(tt.u, f)
			if tt.errField != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.errField+":") || !IsInvalidArgument(err) {
					t.Fatalf("want %s error, got %v", tt.errField, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if uid, gid := podUserNS.HostRoot(); uid != 1000 || gid != 1000 {
		t.Errorf("HostRoot = %d:%d", uid, gid)
	}
}

func TestSandboxNamespaces(t *testing.T) {
	nod := runtimeapi.NamespaceMode_NODE
	n, err := SandboxNamespaces(nil, "/run/netns/p")
	if err != nil {
		t.Fatal(err)
	}
	want := []specs.LinuxNamespace{
		{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: "/run/netns/p"},
		{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.PIDNamespace},
	}
	if got := n.linuxNamespaces(false); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v", got)
	}
	n, err = SandboxNamespaces(&runtimeapi.NamespaceOption{Network: nod, Ipc: nod, Pid: nod}, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := n.linuxNamespaces(true); !reflect.DeepEqual(got, []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.CgroupNamespace}}) {
		t.Errorf("host everything: %+v", got)
	}
	if _, err := SandboxNamespaces(nil, ""); err == nil {
		t.Error("pod network without a netns path must fail")
	}
	if _, err := SandboxNamespaces(&runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET}, "/x"); err == nil {
		t.Error("TARGET pid for a sandbox must fail")
	}
	userns := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: criMapping, Gids: criMapping}
	// A user namespace: a new one first, the netns made inside it (no path).
	n, err = SandboxNamespaces(&runtimeapi.NamespaceOption{UsernsOptions: userns}, "")
	if err != nil {
		t.Fatal(err)
	}
	want = append([]specs.LinuxNamespace{{Type: specs.UserNamespace}}, want...)
	want[2].Path = ""
	if got := n.linuxNamespaces(false); !reflect.DeepEqual(got, want) || !reflect.DeepEqual(n.UserNS, podUserNS) {
		t.Errorf("userns: got %+v %+v", got, n.UserNS)
	}
	for _, o := range []*runtimeapi.NamespaceOption{
		{Network: nod, UsernsOptions: userns}, {Ipc: nod, UsernsOptions: userns}, {Pid: nod, UsernsOptions: userns},
	} {
		if _, err := SandboxNamespaces(o, "/x"); err == nil || !IsInvalidArgument(err) {
			t.Errorf("%v: want an invalid argument, got %v", o, err)
		}
	}
}
