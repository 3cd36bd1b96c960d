package agent

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func conds(s v1.PodStatus) map[v1.PodConditionType]v1.ConditionStatus {
	m := map[v1.PodConditionType]v1.ConditionStatus{}
	for _, c := range s.Conditions {
		m[c.Type] = c.Status
	}
	return m
}

func TestComputePodStatus(t *testing.T) {
	notReady := ctr("app", "sb1", running, 0)
	notReady.Ready = false
	readyC := func(name string) *ContainerObserved {
		c := ctr(name, "sb1", running, 0)
		c.Ready = true
		return c
	}
	sb := &SandboxObserved{ID: "sb1", Ready: true, IPs: []string{"10.88.0.2"}, CreatedAt: tNow.Add(-time.Hour)}
	for _, tc := range []struct {
		name       string
		pod        *v1.Pod
		sandboxes  []*SandboxObserved
		containers []*ContainerObserved
		waiting    map[string]waitingInfo
		phase      v1.PodPhase
		ready      bool
		init       bool
		first      string // state of the first regular container: waiting reason / running / terminated reason
	}{
		{"nothing yet", testPod(v1.RestartPolicyAlways, nil, "app"), nil, nil, nil, v1.PodPending, false, true, "ContainerCreating"},
		{"pulling", testPod(v1.RestartPolicyAlways, nil, "app"), []*SandboxObserved{sb}, nil,
			map[string]waitingInfo{"app": {"ErrImagePull", "boom"}}, v1.PodPending, false, true, "ErrImagePull"},
		{"init running", testPod(v1.RestartPolicyAlways, []string{"init"}, "app"), []*SandboxObserved{sb},
			[]*ContainerObserved{ctr("init", "sb1", running, 0)}, nil, v1.PodPending, false, false, "PodInitializing"},
		{"init failed, Never", testPod(v1.RestartPolicyNever, []string{"init"}, "app"), []*SandboxObserved{sb},
			[]*ContainerObserved{ctr("init", "sb1", exited, 1)}, nil, v1.PodFailed, false, false, "PodInitializing"},
		{"running and ready", testPod(v1.RestartPolicyAlways, []string{"init"}, "app"), []*SandboxObserved{sb},
			[]*ContainerObserved{ctr("init", "sb1", exited, 0), readyC("app")}, nil, v1.PodRunning, true, true, "running"},
		{"running, not ready", testPod(v1.RestartPolicyAlways, nil, "app"), []*SandboxObserved{sb},
			[]*ContainerObserved{notReady}, nil, v1.PodRunning, false, true, "running"},
		{"crash loop is Running", testPod(v1.RestartPolicyAlways, nil, "app"), []*SandboxObserved{sb},
			[]*ContainerObserved{ctr("app", "sb1", exited, 1)}, map[string]waitingInfo{"app": {"CrashLoopBackOff", "back-off"}},
			v1.PodRunning, false, true, "CrashLoopBackOff"},
		{"succeeded", testPod(v1.RestartPolicyOnFailure, nil, "app"), []*SandboxObserved{sbDead},
			[]*ContainerObserved{ctr("app", "sb1", exited, 0)}, nil, v1.PodSucceeded, false, true, "Completed"},
		{"failed, Never", testPod(v1.RestartPolicyNever, nil, "a", "b"), []*SandboxObserved{sb},
			[]*ContainerObserved{ctr("a", "sb1", exited, 0), ctr("b", "sb1", exited, 1)}, nil, v1.PodFailed, false, true, "Completed"},
		{"one running, one done, Never", testPod(v1.RestartPolicyNever, nil, "a", "b"), []*SandboxObserved{sb},
			[]*ContainerObserved{ctr("a", "sb1", exited, 0), readyC("b")}, nil, v1.PodRunning, false, true, "Completed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &PodStatusObserved{Now: tNow, Sandboxes: tc.sandboxes, Containers: tc.containers}
			s := computePodStatus(tc.pod, st, statusInfo{Waiting: tc.waiting, HostIPs: []string{"10.0.0.1"}, FirstSeen: tNow})
			if s.Phase != tc.phase {
				t.Errorf("phase %s, want %s", s.Phase, tc.phase)
			}
			c := conds(s)
			if (c[v1.PodReady] == v1.ConditionTrue) != tc.ready || (c[v1.ContainersReady] == v1.ConditionTrue) != tc.ready {
				t.Errorf("ready conditions %v, want ready=%v", c, tc.ready)
			}
			if (c[v1.PodInitialized] == v1.ConditionTrue) != tc.init || c[v1.PodScheduled] != v1.ConditionTrue {
				t.Errorf("conditions %v, want initialized=%v", c, tc.init)
			}
			cs := s.ContainerStatuses[0]
			var got string
			switch {
			case cs.State.Waiting != nil:
				got = cs.State.Waiting.Reason
			case cs.State.Running != nil:
				got = "running"
			case cs.State.Terminated != nil:
				got = cs.State.Terminated.Reason
			}
			if got != tc.first {
				t.Errorf("first container state %q, want %q", got, tc.first)
			}
			if s.HostIP != "10.0.0.1" || s.StartTime == nil {
				t.Errorf("hostIP %q startTime %v", s.HostIP, s.StartTime)
			}
			if len(tc.sandboxes) > 0 && tc.sandboxes[0].Ready && s.PodIP != "10.88.0.2" {
				t.Errorf("podIP %q", s.PodIP)
			}
			if tc.name == "running and ready" && !s.StartTime.Time.Equal(tNow.Add(-time.Hour)) {
				t.Errorf("startTime %v, want the first sandbox's creation", s.StartTime)
			}
		})
	}
}

func TestFormatTable(t *testing.T) {
	now := tNow
	tr := true
	running := v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", CreationTimestamp: metav1.NewTime(now.Add(-90 * time.Minute))},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "a"}, {Name: "b"}}},
		Status: v1.PodStatus{Phase: v1.PodRunning, PodIP: "10.88.0.2", ContainerStatuses: []v1.ContainerStatus{
			{Name: "a", Ready: true, Started: &tr, State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}},
			{Name: "b", RestartCount: 4, State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
				LastTerminationState: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 1, FinishedAt: metav1.NewTime(now.Add(-2 * time.Minute))}}},
		}}}
	initting := v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "data", CreationTimestamp: metav1.NewTime(now.Add(-30 * time.Second))},
		Spec: v1.PodSpec{InitContainers: []v1.Container{{Name: "i1"}, {Name: "i2"}}, Containers: []v1.Container{{Name: "a"}}},
		Status: v1.PodStatus{Phase: v1.PodPending, InitContainerStatuses: []v1.ContainerStatus{
			{Name: "i1", State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}},
			{Name: "i2", State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}},
		}, ContainerStatuses: []v1.ContainerStatus{{Name: "a", State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "PodInitializing"}}}}}}
	done := v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "job", Namespace: "default", CreationTimestamp: metav1.NewTime(now.Add(-3 * 24 * time.Hour))},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "a"}}},
		Status: v1.PodStatus{Phase: v1.PodSucceeded, ContainerStatuses: []v1.ContainerStatus{
			{Name: "a", State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}}}}
	invalid := v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "broken", Namespace: "default"},
		Status: v1.PodStatus{Phase: v1.PodPending, Reason: "InvalidManifest"}}
	var buf bytes.Buffer
	if err := formatTable(&buf, &v1.PodList{Items: []v1.Pod{initting, running, done, invalid}}, now); err != nil {
		t.Fatal(err)
	}
	want := `NAMESPACE   NAME     READY   STATUS             RESTARTS     AGE         IP
data        db       0/1     Init:1/2           0            30s         <none>
default     web      1/2     CrashLoopBackOff   4 (2m ago)   90m         10.88.0.2
default     job      0/1     Completed          0            3d          <none>
default     broken   0/0     InvalidManifest    0            <unknown>   <none>
`
	if buf.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestHandlerServesPodList(t *testing.T) {
	e := newTestEnv(t, map[string]string{"web.yaml": strings.Replace(simplePod, "  initContainers:\n  - name: init\n    image: busybox:1.36\n", "", 1)}, nil)
	waitFor(t, "app running", func() bool { return containerRunning(e.pod("web"), "app") })
	srv := httptest.NewServer(e.a.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/pods")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var list v1.PodList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if list.Kind != "PodList" || len(list.Items) != 1 || list.Items[0].Status.Phase != v1.PodRunning || list.Items[0].Spec.Containers[0].Name != "app" {
		t.Errorf("list %+v", list)
	}
	tr, err := http.Get(srv.URL + "/pods?format=table")
	if err != nil {
		t.Fatal(err)
	}
	table, _ := io.ReadAll(tr.Body)
	tr.Body.Close()
	if !strings.HasPrefix(tr.Header.Get("Content-Type"), "text/plain") || !strings.HasPrefix(string(table), "NAMESPACE") || !strings.Contains(string(table), "web") {
		t.Errorf("table: %q %s", tr.Header.Get("Content-Type"), table)
	}
	r2, _ := http.Post(srv.URL+"/pods", "text/plain", nil)
	if r2.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", r2.StatusCode)
	}
	r2.Body.Close()
	r3, _ := http.Get(srv.URL + "/other")
	if r3.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %d", r3.StatusCode)
	}
	r3.Body.Close()
}
