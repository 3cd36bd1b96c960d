package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// TestAgentEvictPod: the eviction manager's KillPod makes the pod Failed
// with its reason, message and DisruptionTarget condition, stops it within
// the grace period given, returns once it is stopped, and the pod is no
// longer active; its containers never start again.
func TestAgentEvictPod(t *testing.T) {
	pod := strings.Replace(simplePod, "  initContainers:\n  - name: init\n    image: busybox:1.36\n", "", 1)
	e := newTestEnv(t, map[string]string{"web.yaml": pod}, nil)
	waitFor(t, "app running", func() bool { return containerRunning(e.pod("web"), "app") })
	active := e.a.ActivePods()
	if len(active) != 1 || active[0].Name != "web" {
		t.Fatalf("ActivePods = %v, want web", active)
	}
	st := v1.PodStatus{Phase: v1.PodFailed, Reason: "Evicted", Message: "The node was low on resource: memory. ",
		Conditions: []v1.PodCondition{{Type: v1.DisruptionTarget, Status: v1.ConditionTrue, Reason: "TerminationByKubelet"}}}
	grace := int64(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.a.EvictPod(ctx, active[0], st, &grace); err != nil {
		t.Fatalf("EvictPod: %v", err)
	}
	if e.count("StopContainer") < 1 || e.count("StopPodSandbox") < 1 {
		t.Errorf("pod not stopped when EvictPod returned: %v", e.calls())
	}
	got := e.pod("web").Status
	if got.Phase != v1.PodFailed || got.Reason != "Evicted" || got.Message != st.Message {
		t.Errorf("status phase %s reason %q message %q", got.Phase, got.Reason, got.Message)
	}
	found := false
	for _, c := range got.Conditions {
		found = found || c.Type == v1.DisruptionTarget && c.Status == v1.ConditionTrue
	}
	if !found {
		t.Errorf("no DisruptionTarget condition: %+v", got.Conditions)
	}
	if n := len(e.a.ActivePods()); n != 0 {
		t.Errorf("%d active pods after the eviction", n)
	}
	time.Sleep(100 * time.Millisecond)
	if n := e.count("CreateContainer"); n != 1 {
		t.Errorf("CreateContainer called %d times; an evicted pod must not start again", n)
	}
	if err := e.a.EvictPod(ctx, &v1.Pod{}, st, &grace); err == nil {
		t.Error("EvictPod of a pod the agent does not run succeeded")
	}
}
