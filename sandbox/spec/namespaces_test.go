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
		{name: "userns POD unsupported", opt: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod}}, errField: "linux.security_context.namespace_options.userns_options"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := PodNamespaces(tt.opt, 10, tt.targetPID, tt.netns)
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
}
