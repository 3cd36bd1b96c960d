package node

import (
	"errors"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestObservePressure(t *testing.T) {
	healthy := machine{
		MemTotal: 8 << 30, MemAvailable: 4 << 30,
		FSTotal: 100 << 30, FSAvailable: 50 << 30, FSInodes: 1000, FSInodesFree: 500,
		PIDMax: 32768, PIDCount: 300,
	}
	tests := []struct {
		name string
		edit func(*machine)
		want pressures
	}{
		{"healthy", func(*machine) {}, pressures{}},
		{"memory just above 100Mi", func(m *machine) { m.MemAvailable = 100 << 20 }, pressures{}},
		{"memory below 100Mi", func(m *machine) { m.MemAvailable = 100<<20 - 1 }, pressures{Memory: true}},
		{"meminfo unreadable is no pressure", func(m *machine) { m.MemTotal, m.MemAvailable = 0, 0 }, pressures{}},
		{"disk at 10%", func(m *machine) { m.FSAvailable = 10 << 30 }, pressures{}},
		{"disk below 10%", func(m *machine) { m.FSAvailable = 10<<30 - 1 }, pressures{Disk: true}},
		{"inodes below 5%", func(m *machine) { m.FSInodesFree = 49 }, pressures{Disk: true}},
		{"no inode counts (btrfs)", func(m *machine) { m.FSInodes, m.FSInodesFree = 0, 0 }, pressures{}},
		{"statfs failed", func(m *machine) { m.FSTotal, m.FSAvailable = 0, 0 }, pressures{}},
		{"pids at 10% available", func(m *machine) { m.PIDMax, m.PIDCount = 1000, 900 }, pressures{}},
		{"pids below 10% available", func(m *machine) { m.PIDMax, m.PIDCount = 1000, 901 }, pressures{PID: true}},
		{"more tasks than pid_max", func(m *machine) { m.PIDMax, m.PIDCount = 1000, 2000 }, pressures{PID: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthy
			tt.edit(&m)
			if got := observePressure(m); got != tt.want {
				t.Errorf("observePressure = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPressureHold(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at       time.Duration
		observed pressures
		want     pressures
	}{
		{0, pressures{}, pressures{}},
		{10 * time.Second, pressures{Memory: true}, pressures{Memory: true}},
		{20 * time.Second, pressures{Disk: true}, pressures{Memory: true, Disk: true}},
		{10*time.Second + pressureTransitionPeriod - time.Nanosecond, pressures{}, pressures{Memory: true, Disk: true}},
		{10*time.Second + pressureTransitionPeriod, pressures{}, pressures{Disk: true}},
		{20*time.Second + pressureTransitionPeriod, pressures{PID: true}, pressures{PID: true}},
	}
	var h pressureHold
	for i, s := range steps {
		if got := h.apply(s.observed, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d (+%v, observed %+v): got %+v, want %+v", i, s.at, s.observed, got, s.want)
		}
	}
}

func TestPressureConditions(t *testing.T) {
	tests := []struct {
		cond           v1.NodeCondition
		wantType       v1.NodeConditionType
		wantStatus     v1.ConditionStatus
		wantReason     string
		wantMessageHas string
	}{
		{memoryCondition(false), v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"},
		{memoryCondition(true), v1.NodeMemoryPressure, v1.ConditionTrue, "KubeletHasInsufficientMemory", "kubelet has insufficient memory available"},
		{diskCondition(false), v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"},
		{diskCondition(true), v1.NodeDiskPressure, v1.ConditionTrue, "KubeletHasDiskPressure", "kubelet has disk pressure"},
		{pidCondition(false), v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"},
		{pidCondition(true), v1.NodePIDPressure, v1.ConditionTrue, "KubeletHasInsufficientPID", "kubelet has insufficient PID available"},
	}
	for _, tt := range tests {
		t.Run(tt.wantReason, func(t *testing.T) {
			c := tt.cond
			if c.Type != tt.wantType || c.Status != tt.wantStatus || c.Reason != tt.wantReason || c.Message != tt.wantMessageHas {
				t.Errorf("got %s=%s %s %q, want %s=%s %s %q", c.Type, c.Status, c.Reason, c.Message, tt.wantType, tt.wantStatus, tt.wantReason, tt.wantMessageHas)
			}
		})
	}
}

func criStatus(conds ...*runtimeapi.RuntimeCondition) *runtimeapi.StatusResponse {
	return &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: conds}}
}

var (
	runtimeUp   = &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	networkUp   = &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	networkDown = &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: false,
		Reason: "NetworkPluginNotReady", Message: "Network plugin returns error: cni plugin not initialized"}
	runtimeDown = &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: false, Reason: "Wedged", Message: "oci runtime missing"}
)

func fullCapacity() v1.ResourceList {
	return v1.ResourceList{
		v1.ResourceCPU:              resource.MustParse("2"),
		v1.ResourceMemory:           resource.MustParse("8Gi"),
		v1.ResourcePods:             resource.MustParse("110"),
		v1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
}

func TestReadyCondition(t *testing.T) {
	noMemory := fullCapacity()
	delete(noMemory, v1.ResourceMemory)
	delete(noMemory, v1.ResourceEphemeralStorage)
	tests := []struct {
		name        string
		resp        *runtimeapi.StatusResponse
		err         error
		capacity    v1.ResourceList
		wantStatus  v1.ConditionStatus
		wantReason  string
		wantMessage string
	}{
		{
			name: "ready", resp: criStatus(runtimeUp, networkUp), capacity: fullCapacity(),
			wantStatus: v1.ConditionTrue, wantReason: "KubeletReady", wantMessage: "kubelet is posting ready status",
		},
		{
			name: "network not ready", resp: criStatus(runtimeUp, networkDown), capacity: fullCapacity(),
			wantStatus: v1.ConditionFalse, wantReason: "KubeletNotReady",
			wantMessage: "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
		},
		{
			name: "runtime and network not ready", resp: criStatus(runtimeDown, networkDown), capacity: fullCapacity(),
			wantStatus: v1.ConditionFalse, wantReason: "KubeletNotReady",
			wantMessage: "[container runtime not ready: RuntimeReady=false reason:Wedged message:oci runtime missing, " +
				"container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized]",
		},
		{
			name: "network condition missing", resp: criStatus(runtimeUp), capacity: fullCapacity(),
			wantStatus: v1.ConditionFalse, wantReason: "KubeletNotReady",
			wantMessage: "container runtime network not ready: NetworkReady not reported",
		},
		{
			name: "status call failed", err: errors.New("rpc error: code = Unavailable desc = connection refused"), capacity: fullCapacity(),
			wantStatus: v1.ConditionFalse, wantReason: "KubeletNotReady",
			wantMessage: "container runtime is down: rpc error: code = Unavailable desc = connection refused",
		},
		{
			name: "missing capacity", resp: criStatus(runtimeUp, networkUp), capacity: noMemory,
			wantStatus: v1.ConditionFalse, wantReason: "KubeletNotReady",
			wantMessage: "missing node capacity for resources: memory, ephemeral-storage",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := readyCondition(runtimeErrors(tt.resp, tt.err), tt.capacity)
			if c.Type != v1.NodeReady || c.Status != tt.wantStatus || c.Reason != tt.wantReason || c.Message != tt.wantMessage {
				t.Errorf("got %s=%s %s\n  %q\nwant %s %s\n  %q", c.Type, c.Status, c.Reason, c.Message, tt.wantStatus, tt.wantReason, tt.wantMessage)
			}
		})
	}
}

func TestSetConditionsTransitions(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(10 * time.Second)
	at := func(tm time.Time) metav1.Time { return metav1.NewTime(tm) }
	foreign := v1.NodeCondition{Type: v1.NodeNetworkUnavailable, Status: v1.ConditionFalse, Reason: "RouteCreated",
		LastHeartbeatTime: at(t0), LastTransitionTime: at(t0)}

	tests := []struct {
		name string
		old  []v1.NodeCondition
		want []v1.NodeCondition
		set  []v1.NodeCondition
	}{
		{
			name: "new conditions transition now, in order, after foreign ones",
			old:  []v1.NodeCondition{foreign},
			set:  []v1.NodeCondition{memoryCondition(false), readyCondition(nil, fullCapacity())},
			want: []v1.NodeCondition{
				foreign,
				withTimes(memoryCondition(false), t1, t1),
				withTimes(readyCondition(nil, fullCapacity()), t1, t1),
			},
		},
		{
			name: "same status keeps the transition time, heartbeat moves",
			old:  []v1.NodeCondition{withTimes(memoryCondition(false), t0, t0)},
			set:  []v1.NodeCondition{memoryCondition(false)},
			want: []v1.NodeCondition{withTimes(memoryCondition(false), t1, t0)},
		},
		{
			name: "flip sets the transition time",
			old:  []v1.NodeCondition{withTimes(memoryCondition(false), t0, t0)},
			set:  []v1.NodeCondition{memoryCondition(true)},
			want: []v1.NodeCondition{withTimes(memoryCondition(true), t1, t1)},
		},
		{
			name: "unknown (node lifecycle controller) to true is a transition",
			old: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionUnknown, Reason: "NodeStatusUnknown",
				LastHeartbeatTime: at(t0), LastTransitionTime: at(t0)}},
			set:  []v1.NodeCondition{readyCondition(nil, fullCapacity())},
			want: []v1.NodeCondition{withTimes(readyCondition(nil, fullCapacity()), t1, t1)},
		},
		{
			name: "message change without status change keeps the transition",
			old:  []v1.NodeCondition{withTimes(readyCondition(runtimeErrors(nil, errors.New("a")), fullCapacity()), t0, t0)},
			set:  []v1.NodeCondition{readyCondition(runtimeErrors(nil, errors.New("b")), fullCapacity())},
			want: []v1.NodeCondition{withTimes(readyCondition(runtimeErrors(nil, errors.New("b")), fullCapacity()), t1, t0)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := append([]v1.NodeCondition(nil), tt.old...)
			got := setConditions(tt.old, t1, tt.set...)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d conditions, want %d: %+v", len(got), len(tt.want), got)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("condition %d:\n got %+v\nwant %+v", i, got[i], tt.want[i])
				}
			}
			for i := range before {
				if tt.old[i] != before[i] {
					t.Errorf("setConditions changed its input")
				}
			}
		})
	}
}

func withTimes(c v1.NodeCondition, heartbeat, transition time.Time) v1.NodeCondition {
	c.LastHeartbeatTime = metav1.NewTime(heartbeat)
	c.LastTransitionTime = metav1.NewTime(transition)
	return c
}
