package node

import (
	"encoding/json"
	"errors"
	"maps"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

var testMachine = machine{
	NumCPU:        4,
	MemTotal:      16 * 1024 * 1024 * 1024,
	MemAvailable:  8 * 1024 * 1024 * 1024,
	HugePageSizes: []uint64{2 << 20, 1 << 30},
	FSTotal:       200 << 30, FSAvailable: 100 << 30, FSInodes: 1 << 20, FSInodesFree: 1 << 19,
	PIDMax: 32768, PIDCount: 200,
	MachineID: "3d1219c7c4c5404aaa1f6d2a48adfda4", BootID: "b0-07", KernelVersion: "6.1.0-18-amd64",
	OSImage: "Debian GNU/Linux 12 (bookworm)",
}

func q(s string) resource.Quantity { return resource.MustParse(s) }

func TestCapacity(t *testing.T) {
	noMem := testMachine
	noMem.MemTotal, noMem.FSTotal, noMem.HugePageSizes = 0, 0, nil
	tests := []struct {
		name    string
		old     v1.ResourceList
		m       machine
		maxPods int
		want    v1.ResourceList
	}{
		{
			name: "from the machine", m: testMachine, maxPods: 110,
			want: v1.ResourceList{
				v1.ResourceCPU: q("4"), v1.ResourceMemory: q("16Gi"), v1.ResourceEphemeralStorage: q("200Gi"),
				v1.ResourcePods: q("110"), "hugepages-2Mi": q("0"), "hugepages-1Gi": q("0"),
			},
		},
		{
			name: "unreadable values are left out, extended resources and dropped page sizes handled",
			old: v1.ResourceList{
				v1.ResourceMemory: q("1Gi"), "example.com/dongle": q("3"), "hugepages-2Mi": q("0"), "hugepages-64Ki": q("0"),
			},
			m: noMem, maxPods: 20,
			want: v1.ResourceList{v1.ResourceCPU: q("4"), v1.ResourcePods: q("20"), "example.com/dongle": q("3")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oldCopy := tt.old.DeepCopy()
			got := capacity(tt.old, tt.m, tt.maxPods)
			if !apiequality.Semantic.DeepEqual(got, tt.want) {
				t.Errorf("capacity =\n %v\nwant\n %v", got, tt.want)
			}
			if !apiequality.Semantic.DeepEqual(tt.old, oldCopy) {
				t.Errorf("capacity changed its input")
			}
		})
	}
	// The serialised forms the API server and kubectl show.
	c := capacity(nil, testMachine, 110)
	for name, want := range map[v1.ResourceName]string{v1.ResourceCPU: "4", v1.ResourceMemory: "16Gi", v1.ResourcePods: "110"} {
		if got := c[name]; got.String() != want {
			t.Errorf("%s = %s, want %s", name, got.String(), want)
		}
	}
}

func TestPickAddresses(t *testing.T) {
	tests := []struct {
		in      []string
		want    []string
		wantErr bool
	}{
		{in: nil, want: nil},
		{in: []string{"10.1.0.1"}, want: []string{"10.1.0.1"}},
		{in: []string{"10.1.0.1", "10.1.0.2", "fd00::1", "fd00::2"}, want: []string{"10.1.0.1", "fd00::1"}},
		{in: []string{"fd00::1", "10.1.0.1"}, want: []string{"fd00::1", "10.1.0.1"}},
		{in: []string{"::ffff:10.1.0.1", "10.1.0.2"}, want: []string{"10.1.0.1"}},
		{in: []string{"10.1.0.300"}, wantErr: true},
		{in: []string{"0.0.0.0"}, wantErr: true},
		{in: []string{"10.1.0.1/24"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.in, ","), func(t *testing.T) {
			got, err := pickAddresses(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNodeAddresses(t *testing.T) {
	got := nodeAddresses([]string{"10.1.0.1", "fd00::1"}, "worker-1")
	want := []v1.NodeAddress{
		{Type: v1.NodeInternalIP, Address: "10.1.0.1"},
		{Type: v1.NodeInternalIP, Address: "fd00::1"},
		{Type: v1.NodeHostName, Address: "worker-1"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := nodeAddresses(nil, "worker-1"); !slices.Equal(got, want[2:]) {
		t.Errorf("no IPs: got %v, want only the hostname", got)
	}
}

func TestKubeletVersionFor(t *testing.T) {
	tests := []struct{ in, want string }{
		{"v1.37.2", "v1.37.2"},
		{"v1.37.2+k3s1", "v1.37.2"},
		{"v1.38.0-rc.1", "v1.38.0-rc.1"},
		{"v1.38.0-rc.1+abc", "v1.38.0-rc.1"},
		{"1.36.4", "v1.36.4"},
		{"", fallbackKubeletVersion},
		{"v1.37", fallbackKubeletVersion},
		{"devel", fallbackKubeletVersion},
	}
	for _, tt := range tests {
		if got := kubeletVersionFor(tt.in); got != tt.want {
			t.Errorf("kubeletVersionFor(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFilterLabels(t *testing.T) {
	in := map[string]string{
		"node.kubernetes.io/instance-type":        "m1",
		"node.kubernetes.io/role":                 "worker",
		"sub.node.kubernetes.io/x":                "y",
		"kubelet.kubernetes.io/foo":               "bar",
		"topology.kubernetes.io/zone":             "z1",
		"kubernetes.io/hostname":                  "other",
		"example.com/team":                        "a",
		"plain":                                   "ok",
		"node-role.kubernetes.io/worker":          "",
		"node-restriction.kubernetes.io/secure":   "true",
		"x.node-restriction.kubernetes.io/secure": "true",
		"k8s.io/anything":                         "no",
		"sub.k8s.io/anything":                     "no",
		"kubernetes.io/not-the-kubelets":          "no",
		"example.com/bad value":                   "x",
		"example.com/value":                       "has space",
		"notkubernetes.io/fine":                   "yes",
	}
	kept, dropped := filterLabels(in)
	wantKept := map[string]string{
		"node.kubernetes.io/instance-type": "m1",
		"node.kubernetes.io/role":          "worker",
		"sub.node.kubernetes.io/x":         "y",
		"kubelet.kubernetes.io/foo":        "bar",
		"topology.kubernetes.io/zone":      "z1",
		"kubernetes.io/hostname":           "other",
		"example.com/team":                 "a",
		"plain":                            "ok",
		"notkubernetes.io/fine":            "yes",
	}
	if !maps.Equal(kept, wantKept) {
		t.Errorf("kept = %v\nwant %v", kept, wantKept)
	}
	var droppedKeys []string
	for _, d := range dropped {
		k, _, _ := strings.Cut(d, " (")
		droppedKeys = append(droppedKeys, k)
	}
	wantDropped := []string{
		"example.com/bad value", "example.com/value", "k8s.io/anything", "kubernetes.io/not-the-kubelets",
		"node-restriction.kubernetes.io/secure", "node-role.kubernetes.io/worker", "sub.k8s.io/anything",
		"x.node-restriction.kubernetes.io/secure",
	}
	if !slices.Equal(droppedKeys, wantDropped) {
		t.Errorf("dropped = %v\nwant %v", dropped, wantDropped)
	}
}

func TestNodeLabels(t *testing.T) {
	got := nodeLabels("worker-1", map[string]string{"kubernetes.io/hostname": "override", "example.com/a": "b"})
	want := map[string]string{
		"kubernetes.io/hostname":  "override",
		"kubernetes.io/os":        goruntime.GOOS,
		"kubernetes.io/arch":      goruntime.GOARCH,
		"beta.kubernetes.io/os":   goruntime.GOOS,
		"beta.kubernetes.io/arch": goruntime.GOARCH,
		"example.com/a":           "b",
	}
	if !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestReconcileMeta(t *testing.T) {
	existing := &v1.Node{ObjectMeta: metav1.ObjectMeta{
		Labels:      map[string]string{"kubernetes.io/hostname": "old", "admin.example.com/x": "keep"},
		Annotations: map[string]string{annotationControllerAttach: "false", "other": "keep"},
	}}
	reconcileMeta(existing, map[string]string{"kubernetes.io/hostname": "new", "example.com/a": "b"})
	wantLabels := map[string]string{"kubernetes.io/hostname": "new", "admin.example.com/x": "keep", "example.com/a": "b"}
	wantAnn := map[string]string{annotationControllerAttach: "true", "other": "keep"}
	if !maps.Equal(existing.Labels, wantLabels) || !maps.Equal(existing.Annotations, wantAnn) {
		t.Errorf("labels %v annotations %v, want %v %v", existing.Labels, existing.Annotations, wantLabels, wantAnn)
	}
	bare := &v1.Node{}
	reconcileMeta(bare, map[string]string{"a": "b"})
	if bare.Labels["a"] != "b" || bare.Annotations[annotationControllerAttach] != "true" {
		t.Errorf("nil maps not filled: %+v", bare.ObjectMeta)
	}
}

func TestSetStatus(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := statusConfig{addresses: []string{"10.1.0.1"}, hostname: "worker-1", kubeletPort: 10250, maxPods: 110, kubeletVersion: "v1.37.2"}
	obs := observation{machine: testMachine, runtimeVersion: "peapod://0.4.0", runtimeErrs: runtimeErrors(criStatus(runtimeUp, networkUp), nil)}

	node := newNode("worker-1", nodeLabels("worker-1", nil))
	setStatus(node, cfg, obs, t0)
	s := node.Status

	if !apiequality.Semantic.DeepEqual(s.Allocatable, s.Capacity) {
		t.Errorf("allocatable %v != capacity %v", s.Allocatable, s.Capacity)
	}
	wantInfo := v1.NodeSystemInfo{
		MachineID: testMachine.MachineID, BootID: testMachine.BootID, KernelVersion: testMachine.KernelVersion,
		OSImage: testMachine.OSImage, ContainerRuntimeVersion: "peapod://0.4.0", KubeletVersion: "v1.37.2",
		OperatingSystem: goruntime.GOOS, Architecture: goruntime.GOARCH,
	}
	if s.NodeInfo != wantInfo {
		t.Errorf("nodeInfo = %+v\nwant %+v", s.NodeInfo, wantInfo)
	}
	if s.DaemonEndpoints.KubeletEndpoint.Port != 10250 {
		t.Errorf("kubelet port = %d", s.DaemonEndpoints.KubeletEndpoint.Port)
	}
	var types []v1.NodeConditionType
	for _, c := range s.Conditions {
		types = append(types, c.Type)
	}
	if want := []v1.NodeConditionType{v1.NodeMemoryPressure, v1.NodeDiskPressure, v1.NodePIDPressure, v1.NodeReady}; !slices.Equal(types, want) {
		t.Errorf("condition order %v, want %v", types, want)
	}
	if r := readyOf(node); r.Status != v1.ConditionTrue {
		t.Errorf("ready = %+v", r)
	}

	// A second round with nothing new changes nothing but heartbeats.
	next := node.DeepCopy()
	setStatus(next, cfg, obs, t0.Add(10*time.Second))
	if nodeChanged(node, next) {
		t.Errorf("heartbeat-only round reported as a change")
	}
	if got := readyOf(next).LastHeartbeatTime; !got.Equal(&metav1.Time{Time: t0.Add(10 * time.Second)}) {
		t.Errorf("heartbeat not moved: %v", got)
	}

	// The network going down is a change, and flips Ready.
	down := obs
	down.runtimeErrs = runtimeErrors(criStatus(runtimeUp, networkDown), nil)
	third := next.DeepCopy()
	setStatus(third, cfg, down, t0.Add(20*time.Second))
	if !nodeChanged(next, third) {
		t.Errorf("network down not reported as a change")
	}
	if r := readyOf(third); r.Status != v1.ConditionFalse || !r.LastTransitionTime.Equal(&metav1.Time{Time: t0.Add(20 * time.Second)}) {
		t.Errorf("ready after network down = %+v", r)
	}
}

func TestStatusChanged(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	base := v1.NodeStatus{
		Capacity: v1.ResourceList{v1.ResourceCPU: q("2")},
		Conditions: []v1.NodeCondition{
			withTimes(memoryCondition(false), t0, t0),
			withTimes(readyCondition(nil, fullCapacity()), t0, t0),
		},
	}
	tests := []struct {
		name string
		edit func(*v1.NodeStatus)
		want bool
	}{
		{"identical", func(*v1.NodeStatus) {}, false},
		{"heartbeat only", func(s *v1.NodeStatus) {
			for i := range s.Conditions {
				s.Conditions[i].LastHeartbeatTime = metav1.NewTime(t0.Add(time.Minute))
			}
		}, false},
		{"conditions reordered", func(s *v1.NodeStatus) { slices.Reverse(s.Conditions) }, false},
		{"same quantity, other spelling", func(s *v1.NodeStatus) { s.Capacity[v1.ResourceCPU] = q("2000m") }, false},
		{"transition time", func(s *v1.NodeStatus) { s.Conditions[0].LastTransitionTime = metav1.NewTime(t0.Add(time.Minute)) }, true},
		{"condition status", func(s *v1.NodeStatus) { s.Conditions[0] = withTimes(memoryCondition(true), t0, t0) }, true},
		{"condition message", func(s *v1.NodeStatus) { s.Conditions[1].Message = "other" }, true},
		{"condition added", func(s *v1.NodeStatus) {
			s.Conditions = append(s.Conditions, withTimes(pidCondition(false), t0, t0))
		}, true},
		{"capacity", func(s *v1.NodeStatus) { s.Capacity[v1.ResourceCPU] = q("3") }, true},
		{"addresses", func(s *v1.NodeStatus) { s.Addresses = []v1.NodeAddress{{Type: v1.NodeHostName, Address: "h"}} }, true},
		{"node info", func(s *v1.NodeStatus) { s.NodeInfo.ContainerRuntimeVersion = "peapod://0.5.0" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base.DeepCopy()
			tt.edit(s)
			if got := statusChanged(&base, s); got != tt.want {
				t.Errorf("statusChanged = %v, want %v", got, tt.want)
			}
		})
	}

	old := &v1.Node{Status: base}
	labelled := old.DeepCopy()
	labelled.Labels = map[string]string{"kubernetes.io/os": "linux"}
	if !nodeChanged(old, labelled) {
		t.Errorf("nodeChanged missed a label")
	}
}

func TestStatusPatch(t *testing.T) {
	old := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"a": "b"}},
		Spec:       v1.NodeSpec{PodCIDR: "10.1.1.0/24", Unschedulable: true},
		Status: v1.NodeStatus{
			Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.1.0.1"}, {Type: v1.NodeHostName, Address: "n"}},
			Capacity:  v1.ResourceList{v1.ResourceCPU: q("2")},
		},
	}
	tests := []struct {
		name  string
		edit  func(*v1.Node)
		check func(t *testing.T, patch map[string]any, applied *v1.Node)
	}{
		{
			name: "nothing changed",
			edit: func(*v1.Node) {},
			check: func(t *testing.T, patch map[string]any, _ *v1.Node) {
				if len(patch) != 0 {
					t.Errorf("patch = %v, want {}", patch)
				}
			},
		},
		{
			name: "spec changes stay out",
			edit: func(n *v1.Node) { n.Spec.Unschedulable = false; n.Status.Capacity[v1.ResourceCPU] = q("4") },
			check: func(t *testing.T, patch map[string]any, applied *v1.Node) {
				if _, ok := patch["spec"]; ok {
					t.Errorf("patch touches spec: %v", patch)
				}
				if c := applied.Status.Capacity[v1.ResourceCPU]; c.String() != "4" {
					t.Errorf("cpu = %s", c.String())
				}
			},
		},
		{
			name: "labels ride along",
			edit: func(n *v1.Node) { n.Labels["kubernetes.io/os"] = "linux" },
			check: func(t *testing.T, _ map[string]any, applied *v1.Node) {
				if !maps.Equal(applied.Labels, map[string]string{"a": "b", "kubernetes.io/os": "linux"}) {
					t.Errorf("labels = %v", applied.Labels)
				}
			},
		},
		{
			name: "dual-stack addresses replace the list",
			edit: func(n *v1.Node) {
				n.Status.Addresses = []v1.NodeAddress{
					{Type: v1.NodeInternalIP, Address: "10.1.0.2"},
					{Type: v1.NodeInternalIP, Address: "fd00::2"},
					{Type: v1.NodeHostName, Address: "n"},
				}
			},
			check: func(t *testing.T, _ map[string]any, applied *v1.Node) {
				want := []v1.NodeAddress{
					{Type: v1.NodeInternalIP, Address: "10.1.0.2"},
					{Type: v1.NodeInternalIP, Address: "fd00::2"},
					{Type: v1.NodeHostName, Address: "n"},
				}
				if !slices.Equal(applied.Status.Addresses, want) {
					t.Errorf("addresses = %v, want %v", applied.Status.Addresses, want)
				}
			},
		},
		{
			name: "a new condition is merged in",
			edit: func(n *v1.Node) {
				n.Status.Conditions = append(n.Status.Conditions, v1.NodeCondition{Type: v1.NodeReady, Status: v1.ConditionTrue})
			},
			check: func(t *testing.T, _ map[string]any, applied *v1.Node) {
				if len(applied.Status.Conditions) != 1 {
					t.Errorf("conditions = %v", applied.Status.Conditions)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := old.DeepCopy()
			tt.edit(want)
			patch, err := statusPatch(old, want)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(patch, &m); err != nil {
				t.Fatal(err)
			}
			// Apply it the way the API server does.
			oldJSON, _ := json.Marshal(old)
			appliedJSON, err := strategicpatch.StrategicMergePatch(oldJSON, patch, v1.Node{})
			if err != nil {
				t.Fatalf("apply %s: %v", patch, err)
			}
			var applied v1.Node
			if err := json.Unmarshal(appliedJSON, &applied); err != nil {
				t.Fatal(err)
			}
			if !apiequality.Semantic.DeepEqual(applied.Spec, old.Spec) {
				t.Errorf("spec changed: %+v", applied.Spec)
			}
			tt.check(t, m, &applied)
		})
	}
}

func TestPodCIDRs(t *testing.T) {
	tests := []struct {
		spec v1.NodeSpec
		want string
	}{
		{v1.NodeSpec{}, ""},
		{v1.NodeSpec{PodCIDR: "10.1.1.0/24"}, "10.1.1.0/24"},
		{v1.NodeSpec{PodCIDR: "10.1.1.0/24", PodCIDRs: []string{"10.1.1.0/24", "fd00:1::/64"}}, "10.1.1.0/24,fd00:1::/64"},
	}
	for _, tt := range tests {
		if got := podCIDRs(&v1.Node{Spec: tt.spec}); got != tt.want {
			t.Errorf("podCIDRs(%+v) = %q, want %q", tt.spec, got, tt.want)
		}
	}
}

func TestRuntimeErrorsWrap(t *testing.T) {
	cause := errors.New("boom")
	errs := runtimeErrors(nil, cause)
	if len(errs) != 1 || !errors.Is(errs[0], cause) {
		t.Errorf("runtimeErrors(nil, cause) = %v, want one error wrapping cause", errs)
	}
	if errs := runtimeErrors(criStatus(runtimeUp, networkUp), nil); len(errs) != 0 {
		t.Errorf("ready runtime gave %v", errs)
	}
}

func TestAllocatable(t *testing.T) {
	q := resource.MustParse
	capacity := v1.ResourceList{v1.ResourceCPU: q("2"), v1.ResourceMemory: q("24Gi"), v1.ResourcePods: q("110"), v1.ResourceEphemeralStorage: q("100G")}
	tests := []struct {
		name     string
		reserved v1.ResourceList
		want     v1.ResourceList
	}{
		{"none", nil, capacity},
		{"reserved and eviction", v1.ResourceList{v1.ResourceCPU: q("500m"), v1.ResourceMemory: q("1124Mi"), v1.ResourceEphemeralStorage: q("10G")},
			v1.ResourceList{v1.ResourceCPU: q("1500m"), v1.ResourceMemory: q("23452Mi"), v1.ResourcePods: q("110"), v1.ResourceEphemeralStorage: q("90G")}},
		{"more reserved than there is", v1.ResourceList{v1.ResourceMemory: q("30Gi")},
			v1.ResourceList{v1.ResourceCPU: q("2"), v1.ResourceMemory: q("0"), v1.ResourcePods: q("110"), v1.ResourceEphemeralStorage: q("100G")}},
		{"a resource the node lacks", v1.ResourceList{"example.com/gpu": q("1")}, capacity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Allocatable(capacity, tt.reserved)
			for name, w := range tt.want {
				if g := got[name]; g.Cmp(w) != 0 {
					t.Errorf("%s = %s, want %s", name, g.String(), w.String())
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("allocatable %v, want %v", got, tt.want)
			}
		})
	}
}

// status.volumesInUse is the volume manager's list, sorted, once it is
// known; before that the field stays as the API server has it, and
// volumesAttached (the attach/detach controller's) is never touched.
func TestSetStatusVolumesInUse(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := statusConfig{addresses: []string{"10.1.0.1"}, hostname: "n", kubeletPort: 10250, maxPods: 110, kubeletVersion: "v1.37.2"}
	a, b := v1.UniqueVolumeName("kubernetes.io/csi/loop.csi.peapod.io^a"), v1.UniqueVolumeName("kubernetes.io/csi/loop.csi.peapod.io^b")
	attached := []v1.AttachedVolume{{Name: a, DevicePath: "/dev/loop1"}}
	tests := []struct {
		name  string
		had   []v1.UniqueVolumeName
		names []v1.UniqueVolumeName
		known bool
		want  []v1.UniqueVolumeName
	}{
		{name: "not known yet: kept", had: []v1.UniqueVolumeName{a}, want: []v1.UniqueVolumeName{a}},
		{name: "known: set, sorted", names: []v1.UniqueVolumeName{b, a}, known: true, want: []v1.UniqueVolumeName{a, b}},
		{name: "known: one left", had: []v1.UniqueVolumeName{a, b}, names: []v1.UniqueVolumeName{b}, known: true, want: []v1.UniqueVolumeName{b}},
		{name: "known: none", had: []v1.UniqueVolumeName{a}, known: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := newNode("n", nodeLabels("n", nil))
			old.Status.VolumesInUse, old.Status.VolumesAttached = tt.had, attached
			setStatus(old, cfg, observation{machine: testMachine}, t0) // last round's
			obs := observation{machine: testMachine, volumesInUse: tt.names, volumesInUseKnown: tt.known}
			node := old.DeepCopy()
			setStatus(node, cfg, obs, t0)
			if !slices.Equal(node.Status.VolumesInUse, tt.want) {
				t.Errorf("volumesInUse = %v, want %v", node.Status.VolumesInUse, tt.want)
			}
			if !slices.Equal(node.Status.VolumesAttached, attached) {
				t.Errorf("volumesAttached = %v, want it untouched", node.Status.VolumesAttached)
			}
			if changed := statusChanged(&old.Status, &node.Status); changed != !slices.Equal(tt.had, tt.want) {
				t.Errorf("statusChanged = %t", changed)
			}
			// The patch, applied as the API server does, gives the list.
			patch, err := statusPatch(old, node)
			if err != nil {
				t.Fatal(err)
			}
			oldJSON, _ := json.Marshal(old)
			appliedJSON, err := strategicpatch.StrategicMergePatch(oldJSON, patch, v1.Node{})
			if err != nil {
				t.Fatalf("apply %s: %v", patch, err)
			}
			var applied v1.Node
			if err := json.Unmarshal(appliedJSON, &applied); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(applied.Status.VolumesInUse, tt.want) || !slices.Equal(applied.Status.VolumesAttached, attached) {
				t.Errorf("after patch %s: volumesInUse %v volumesAttached %v", patch, applied.Status.VolumesInUse, applied.Status.VolumesAttached)
			}
		})
	}
}
