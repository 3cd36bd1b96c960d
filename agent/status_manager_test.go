package agent

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

func TestMergeStatus(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	now := time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC)
	ours := v1.PodStatus{
		Phase: v1.PodRunning, PodIP: "10.0.0.5", PodIPs: []v1.PodIP{{IP: "10.0.0.5"}}, HostIP: "192.168.1.2",
		QOSClass:          v1.PodQOSBestEffort,
		StartTime:         &metav1.Time{Time: now},
		ContainerStatuses: []v1.ContainerStatus{{Name: "app", Ready: true}},
		Conditions: []v1.PodCondition{
			{Type: v1.PodReady, Status: v1.ConditionTrue, LastTransitionTime: metav1.NewTime(now)},
			{Type: v1.ContainersReady, Status: v1.ConditionTrue, LastTransitionTime: metav1.NewTime(now)},
			{Type: v1.PodScheduled, Status: v1.ConditionTrue, LastTransitionTime: metav1.NewTime(now)},
		},
	}
	for _, tc := range []struct {
		name  string
		api   v1.PodStatus
		check func(t *testing.T, got v1.PodStatus)
	}{
		{"scheduled pod: the scheduler's condition kept, ours added", v1.PodStatus{
			Phase: v1.PodPending, QOSClass: v1.PodQOSBurstable,
			Conditions: []v1.PodCondition{{Type: v1.PodScheduled, Status: v1.ConditionTrue, LastTransitionTime: t0}},
		}, func(t *testing.T, got v1.PodStatus) {
			if got.Phase != v1.PodRunning || got.PodIP != "10.0.0.5" || got.QOSClass != v1.PodQOSBurstable || len(got.Conditions) != 3 {
				t.Fatalf("got %+v", got)
			}
			if got.Conditions[0].Type != v1.PodScheduled || !got.Conditions[0].LastTransitionTime.Equal(&t0) {
				t.Errorf("PodScheduled changed: %+v", got.Conditions[0])
			}
			if got.Conditions[1].ObservedGeneration != 3 || got.ObservedGeneration != 3 {
				t.Errorf("observedGeneration not set: %+v", got)
			}
		}},
		{"bound by nodeName: PodScheduled added", v1.PodStatus{Phase: v1.PodPending}, func(t *testing.T, got v1.PodStatus) {
			n := 0
			for _, c := range got.Conditions {
				if c.Type == v1.PodScheduled {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("PodScheduled %d times: %+v", n, got.Conditions)
			}
		}},
		{"unchanged condition keeps its transition time, start time kept", v1.PodStatus{
			Phase: v1.PodRunning, StartTime: &t0,
			Conditions: []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue, LastTransitionTime: t0}, {Type: v1.ContainersReady, Status: v1.ConditionFalse, LastTransitionTime: t0}},
		}, func(t *testing.T, got v1.PodStatus) {
			if !got.StartTime.Equal(&t0) {
				t.Errorf("startTime %v", got.StartTime)
			}
			for _, c := range got.Conditions {
				switch c.Type {
				case v1.PodReady:
					if !c.LastTransitionTime.Equal(&t0) {
						t.Errorf("Ready moved: %v", c.LastTransitionTime)
					}
				case v1.ContainersReady:
					if !c.LastTransitionTime.Time.Equal(now) {
						t.Errorf("ContainersReady flipped but kept its time: %v", c.LastTransitionTime)
					}
				}
			}
		}},
		{"readiness gate not met", v1.PodStatus{Phase: v1.PodRunning}, func(t *testing.T, got v1.PodStatus) {
			for _, c := range got.Conditions {
				if c.Type == v1.PodReady && (c.Status != v1.ConditionFalse || c.Reason != "ReadinessGatesNotReady") {
					t.Errorf("Ready %+v with an unmet gate", c)
				}
			}
		}},
		{"terminal phase is final", v1.PodStatus{Phase: v1.PodFailed, PodIP: "10.0.0.9", PodIPs: []v1.PodIP{{IP: "10.0.0.9"}}}, func(t *testing.T, got v1.PodStatus) {
			if got.Phase != v1.PodFailed {
				t.Errorf("phase %s", got.Phase)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &v1.Pod{Status: tc.api}
			api.Generation = 3
			if tc.name == "readiness gate not met" {
				api.Spec.ReadinessGates = []v1.PodReadinessGate{{ConditionType: "example.com/feature-1"}}
			}
			tc.check(t, mergeStatus(api, ours, now))
		})
	}
}

func TestStatusPatch(t *testing.T) {
	old := v1.PodStatus{Phase: v1.PodPending, Conditions: []v1.PodCondition{{Type: v1.PodScheduled, Status: v1.ConditionTrue}}}
	newS := *old.DeepCopy()
	newS.Phase = v1.PodRunning
	newS.PodIP = "10.0.0.5"
	b, err := statusPatch("uid-1", old, newS)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if m["metadata"]["uid"] != "uid-1" || m["status"]["phase"] != "Running" || m["status"]["podIP"] != "10.0.0.5" {
		t.Errorf("patch %s", b)
	}
	if _, ok := m["status"]["conditions"]; ok {
		t.Errorf("unchanged conditions in the patch: %s", b)
	}
}

// TestMergeStatusDisruptionTarget: the node's DisruptionTarget (an
// eviction) reaches the API server, unless the pod already has one that
// says it is disrupted (the API server's, for a preemption).
func TestMergeStatusDisruptionTarget(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC)
	evicted := v1.PodCondition{Type: v1.DisruptionTarget, Status: v1.ConditionTrue, Reason: "TerminationByKubelet", Message: "low on memory"}
	ours := v1.PodStatus{Phase: v1.PodFailed, Reason: "Evicted", Conditions: []v1.PodCondition{evicted}}
	for _, tc := range []struct {
		name       string
		api        []v1.PodCondition
		wantReason string
	}{
		{"none yet", nil, "TerminationByKubelet"},
		{"a false one replaced", []v1.PodCondition{{Type: v1.DisruptionTarget, Status: v1.ConditionFalse, Reason: "Old"}}, "TerminationByKubelet"},
		{"a true one kept", []v1.PodCondition{{Type: v1.DisruptionTarget, Status: v1.ConditionTrue, Reason: "PreemptionByScheduler"}}, "PreemptionByScheduler"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &v1.Pod{Status: v1.PodStatus{Phase: v1.PodRunning, Conditions: tc.api}}
			got := mergeStatus(api, ours, now)
			var found []v1.PodCondition
			for _, c := range got.Conditions {
				if c.Type == v1.DisruptionTarget {
					found = append(found, c)
				}
			}
			if len(found) != 1 || found[0].Reason != tc.wantReason || got.Phase != v1.PodFailed || got.Reason != "Evicted" {
				t.Fatalf("got phase %s reason %q, DisruptionTarget %+v", got.Phase, got.Reason, found)
			}
		})
	}
}

// TestStatusNotWrittenBeforeFirstSync: a worker that has not looked at the
// runtime yet (just started, as after an agent restart) has no status; the
// status manager must leave the API server's alone rather than wipe the
// pod's container statuses and conditions with an empty one.
func TestStatusNotWrittenBeforeFirstSync(t *testing.T) {
	pod := testPod(v1.RestartPolicyAlways, nil, "app")
	pod.Status = v1.PodStatus{
		Phase:             v1.PodRunning,
		ContainerStatuses: []v1.ContainerStatus{{Name: "app", Ready: true}},
		Conditions:        []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue}},
	}
	client := fake.NewClientset(pod.DeepCopy())
	a := &Agent{clock: realClock{}, workers: map[types.UID]*worker{}}
	a.cluster = &clusterState{
		o:    ClusterOptions{Client: client},
		pods: map[types.UID]*v1.Pod{pod.UID: pod}, rejected: map[types.UID]admitResult{}, finished: map[types.UID]bool{},
	}
	w := &worker{a: a, pod: pod}
	a.workers[pod.UID] = w
	m := newStatusManager(a)

	patches := func() int {
		n := 0
		for _, act := range client.Actions() {
			if act.GetVerb() == "patch" && act.GetSubresource() == "status" {
				n++
			}
		}
		return n
	}
	m.syncOnce(context.Background())
	if n := patches(); n != 0 {
		t.Fatalf("%d status patches before the worker's first sync, want none", n)
	}

	// Once the worker knows (here: the container ended), the change is written.
	w.mu.Lock()
	w.status = *pod.Status.DeepCopy()
	w.status.ContainerStatuses[0].Ready = false
	w.statusKnown = true
	w.mu.Unlock()
	m.syncOnce(context.Background())
	if n := patches(); n != 1 {
		t.Fatalf("%d status patches after the worker's first sync, want 1", n)
	}
	got, err := client.CoreV1().Pods(pod.Namespace).Get(context.Background(), pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Status.ContainerStatuses) != 1 || got.Status.ContainerStatuses[0].Ready {
		t.Errorf("status after the write: %+v", got.Status)
	}
}
