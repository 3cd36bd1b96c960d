package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

const simplePod = `apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  initContainers:
  - name: init
    image: busybox:1.36
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "echo $(GREETING)"]
    env:
    - {name: GREETING, value: hello}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    ports:
    - {containerPort: 80, hostPort: 8080}
`

type testEnv struct {
	a      *Agent
	rt     *critest.FakeRuntimeService
	img    *critest.FakeImageService
	dir    string
	reg    *prometheus.Registry
	vols   Volumes // nil: no volume manager
	state  string  // the agent's StateDir, made before setup runs
	cancel context.CancelFunc
	done   chan struct{}
}

func newTestEnv(t *testing.T, manifests map[string]string, setup func(*testEnv)) *testEnv {
	t.Helper()
	e := &testEnv{
		rt:  critest.NewFakeRuntimeService(),
		img: critest.NewFakeImageService(),
		dir: t.TempDir(),
		reg: prometheus.NewRegistry(),
	}
	e.state = t.TempDir()
	e.img.SetFakeImages([]string{"busybox:1.36"})
	for name, content := range manifests {
		writeFile(t, e.dir, name, content)
	}
	if setup != nil {
		setup(e)
	}
	state := e.state
	a, err := New(Options{
		ManifestsDir: e.dir, StateDir: state, PodLogsDir: filepath.Join(state, "logs"), NodeName: "node1", NodeIP: "10.0.0.1",
		Runtime: e.rt, Images: e.img, Registerer: e.reg, SyncPeriod: 20 * time.Millisecond, Volumes: e.vols,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *testEnv) start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		_ = e.a.Run(ctx)
	}()
}

func (e *testEnv) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
		e.cancel = nil
	}
}

func (e *testEnv) calls() []string { return e.rt.GetCalls() }

func (e *testEnv) count(call string) int {
	n := 0
	for _, c := range e.calls() {
		if c == call {
			n++
		}
	}
	return n
}

// setExited makes the container named name with the given attempt exit.
func (e *testEnv) setExited(t *testing.T, name string, attempt uint32, code int32) {
	t.Helper()
	e.rt.Lock()
	defer e.rt.Unlock()
	for _, c := range e.rt.Containers {
		if c.Metadata.Name == name && c.Metadata.Attempt == attempt {
			c.State = runtimeapi.ContainerState_CONTAINER_EXITED
			c.ExitCode = code
			c.FinishedAt = time.Now().UnixNano()
			return
		}
	}
	t.Fatalf("no container %s attempt %d", name, attempt)
}

func (e *testEnv) pod(name string) *v1.Pod {
	for _, p := range e.a.Pods().Items {
		if p.Name == name {
			return &p
		}
	}
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func containerRunning(p *v1.Pod, name string) bool {
	if p == nil {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name {
			return cs.State.Running != nil
		}
	}
	return false
}

func TestAgentRunsPodInitThenApp(t *testing.T) {
	e := newTestEnv(t, map[string]string{"web.yaml": simplePod}, nil)
	waitFor(t, "init container created", func() bool { return e.count("StartContainer") == 1 })
	p := e.pod("web")
	if p.Status.Phase != v1.PodPending || p.Status.InitContainerStatuses[0].State.Running == nil {
		t.Fatalf("while init runs: phase %s init %+v", p.Status.Phase, p.Status.InitContainerStatuses)
	}
	if r := podSummaryStatus(p); r != "Init:0/1" {
		t.Errorf("table status while init runs = %q", r)
	}
	e.setExited(t, "init", 0, 0)
	waitFor(t, "app running", func() bool { return containerRunning(e.pod("web"), "app") })
	p = e.pod("web")
	if p.Status.Phase != v1.PodRunning || p.Status.PodIP != critest.FakePodSandboxIPs[0] || p.Status.HostIP != "10.0.0.1" {
		t.Errorf("status: phase %s podIP %s hostIP %s", p.Status.Phase, p.Status.PodIP, p.Status.HostIP)
	}
	for _, c := range p.Status.Conditions {
		if c.Status != v1.ConditionTrue {
			t.Errorf("condition %s is %s (%s)", c.Type, c.Status, c.Message)
		}
	}
	cs := p.Status.ContainerStatuses[0]
	if !strings.HasPrefix(cs.ContainerID, "peapod://") || !cs.Ready || cs.Started == nil || !*cs.Started || cs.RestartCount != 0 {
		t.Errorf("container status %+v", cs)
	}
	if n := e.count("RunPodSandbox"); n != 1 {
		t.Errorf("RunPodSandbox called %d times", n)
	}

	// What the runtime got.
	e.rt.Lock()
	var sb *critest.FakePodSandbox
	for _, s := range e.rt.Sandboxes {
		sb = s
	}
	var app *critest.FakeContainer
	for _, c := range e.rt.Containers {
		if c.Metadata.Name == "app" {
			app = c
		}
	}
	e.rt.Unlock()
	if sb.Labels[labelPodUID] != string(p.UID) || sb.Labels[labelPodName] != "web" || sb.Labels["app"] != "web" || sb.Labels[labelManagedBy] != managedByAgent {
		t.Errorf("sandbox labels %v", sb.Labels)
	}
	if app.Labels[labelContainerName] != "app" || app.Annotations[annotationContainerHash] == "" {
		t.Errorf("container labels %v annotations %v", app.Labels, app.Annotations)
	}
	// The pod IP is known before the app container is made.
	_ = app
}

func podSummaryStatus(p *v1.Pod) string {
	_, s, _ := podSummary(p, time.Now())
	return s
}

func TestAgentRestartsWithBackOff(t *testing.T) {
	pod := strings.Replace(simplePod, "  initContainers:\n  - name: init\n    image: busybox:1.36\n", "", 1)
	e := newTestEnv(t, map[string]string{"web.yaml": pod}, nil)
	waitFor(t, "app running", func() bool { return containerRunning(e.pod("web"), "app") })

	// First crash: restarted at once.
	e.setExited(t, "app", 0, 1)
	waitFor(t, "restart 1", func() bool {
		p := e.pod("web")
		return containerRunning(p, "app") && p.Status.ContainerStatuses[0].RestartCount == 1
	})
	cs := e.pod("web").Status.ContainerStatuses[0]
	if lt := cs.LastTerminationState.Terminated; lt == nil || lt.ExitCode != 1 || lt.Reason != "Error" {
		t.Errorf("lastState after a crash: %+v", cs.LastTerminationState)
	}
	// Second crash: back-off 10s.
	e.setExited(t, "app", 1, 2)
	waitFor(t, "CrashLoopBackOff", func() bool {
		w := e.pod("web").Status.ContainerStatuses[0].State.Waiting
		return w != nil && w.Reason == "CrashLoopBackOff"
	})
	p := e.pod("web")
	cs = p.Status.ContainerStatuses[0]
	want := "back-off 10s restarting failed container=app pod=web_default(" + string(p.UID) + ")"
	if cs.State.Waiting.Message != want || cs.RestartCount != 1 || cs.LastTerminationState.Terminated.ExitCode != 2 {
		t.Errorf("waiting %+v restarts %d last %+v", cs.State.Waiting, cs.RestartCount, cs.LastTerminationState)
	}
	if p.Status.Phase != v1.PodRunning {
		t.Errorf("phase in CrashLoopBackOff = %s, want Running", p.Status.Phase)
	}
	if _, status, restarts := podSummary(p, time.Now()); status != "CrashLoopBackOff" || !strings.HasPrefix(restarts, "1 (") {
		t.Errorf("table: %s %s", status, restarts)
	}
	if v := counterValue(e.a.metrics.restarts.WithLabelValues("default", "web", "app")); v != 1 {
		t.Errorf("restarts metric = %v", v)
	}
	if n := histogramCount(t, e.reg, "peapod_pod_start_duration_seconds"); n != 1 {
		t.Errorf("pod start histogram series %d", n)
	}
}

func TestAgentRestartPolicyNever(t *testing.T) {
	pod := strings.Replace(simplePod, "spec:\n", "spec:\n  restartPolicy: Never\n", 1)
	pod = strings.Replace(pod, "  initContainers:\n  - name: init\n    image: busybox:1.36\n", "", 1)
	e := newTestEnv(t, map[string]string{"web.yaml": pod}, nil)
	waitFor(t, "app running", func() bool { return containerRunning(e.pod("web"), "app") })
	e.setExited(t, "app", 0, 3)
	waitFor(t, "Failed", func() bool { return e.pod("web").Status.Phase == v1.PodFailed })
	waitFor(t, "sandbox stopped", func() bool { return e.count("StopPodSandbox") >= 1 })
	time.Sleep(100 * time.Millisecond)
	if n := e.count("CreateContainer"); n != 1 {
		t.Errorf("CreateContainer called %d times with restartPolicy Never", n)
	}
	if n := e.count("RunPodSandbox"); n != 1 {
		t.Errorf("RunPodSandbox called %d times", n)
	}
	if _, s, _ := podSummary(e.pod("web"), time.Now()); s != "Error" {
		t.Errorf("table status %q", s)
	}
}

func TestAgentAdoptsRunningPodAfterRestart(t *testing.T) {
	pod := strings.Replace(simplePod, "  initContainers:\n  - name: init\n    image: busybox:1.36\n", "", 1)
	e := newTestEnv(t, map[string]string{"web.yaml": pod}, func(e *testEnv) {
		// What a previous peapod left behind: a ready sandbox and a running
		// container labelled with the pod's UID, restarted 3 times.
		set := readManifestDir(e.dir, "node1")
		p := set.Pods[0]
		sbCfg, err := makeSandboxConfig(p, 0, "/var/log/pods", dnsSettings{ResolvConf: "/nonexistent"}, nil)
		if err != nil {
			panic(err)
		}
		sbID, _ := e.rt.RunPodSandbox(context.Background(), sbCfg, "")
		for attempt := uint32(2); attempt <= 3; attempt++ {
			cfg, err := makeContainerConfig(p, &p.Spec.Containers[0], containerParams{Attempt: attempt, ImageRef: "busybox:1.36"})
			if err != nil {
				panic(err)
			}
			id, _ := e.rt.CreateContainer(context.Background(), sbID, cfg, sbCfg)
			_ = e.rt.StartContainer(context.Background(), id)
			if attempt == 2 {
				e.rt.Containers[id].State = runtimeapi.ContainerState_CONTAINER_EXITED
				e.rt.Containers[id].ExitCode = 137
				e.rt.Containers[id].FinishedAt = time.Now().UnixNano()
			}
		}
		e.rt.Called = nil
	})
	waitFor(t, "adopted", func() bool { return containerRunning(e.pod("web"), "app") })
	time.Sleep(100 * time.Millisecond)
	for _, c := range []string{"RunPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "StopPodSandbox"} {
		if n := e.count(c); n != 0 {
			t.Errorf("%s called %d times while adopting", c, n)
		}
	}
	cs := e.pod("web").Status.ContainerStatuses[0]
	if cs.RestartCount != 3 || cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 137 {
		t.Errorf("adopted status: restarts %d last %+v", cs.RestartCount, cs.LastTerminationState)
	}
	if n := histogramCount(t, e.reg, "peapod_pod_start_duration_seconds"); n != 0 {
		t.Errorf("an adopted pod's start was measured (%d observations)", n)
	}
}

func TestAgentStopLeavesPodsRunning(t *testing.T) {
	e := newTestEnv(t, map[string]string{"web.yaml": strings.Replace(simplePod, "  initContainers:\n  - name: init\n    image: busybox:1.36\n", "", 1)}, nil)
	waitFor(t, "app running", func() bool { return containerRunning(e.pod("web"), "app") })
	e.stop()
	for _, c := range []string{"StopContainer", "StopPodSandbox", "RemovePodSandbox"} {
		if n := e.count(c); n != 0 {
			t.Errorf("%s called %d times on agent stop", c, n)
		}
	}
}

func TestAgentPodRemovedAndChanged(t *testing.T) {
	pod := `apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: busybox:1.36
    lifecycle:
      preStop:
        exec: {command: [sh, -c, "sleep 1"]}
`
	e := newTestEnv(t, map[string]string{"web.yaml": pod}, nil)
	waitFor(t, "app running", func() bool { return containerRunning(e.pod("web"), "app") })
	oldUID := e.pod("web").UID

	// Changed file: a new UID, the old pod is killed and removed first.
	writeFile(t, e.dir, "web.yaml", strings.Replace(pod, "sleep 1", "sleep 2", 1))
	waitFor(t, "new pod running", func() bool {
		p := e.pod("web")
		return p != nil && p.UID != oldUID && containerRunning(p, "app")
	})
	if n := e.count("RemovePodSandbox"); n != 1 {
		t.Errorf("RemovePodSandbox after a change: %d", n)
	}
	if n := e.count("RunPodSandbox"); n != 2 {
		t.Errorf("RunPodSandbox after a change: %d", n)
	}

	// Removed file: preStop, stop, sandbox stop and remove.
	os.Remove(filepath.Join(e.dir, "web.yaml"))
	waitFor(t, "pod gone", func() bool { return len(e.a.Pods().Items) == 0 })
	calls := e.calls()
	last := calls[slices.Index(calls, "RemovePodSandbox")+1:]
	for _, want := range []string{"ExecSync", "StopContainer", "StopPodSandbox", "RemovePodSandbox"} {
		if !slices.Contains(last, want) {
			t.Errorf("%s not called on removal; calls %v", want, last)
		}
	}
	e.rt.Lock()
	n := len(e.rt.Sandboxes)
	e.rt.Unlock()
	if n != 0 {
		t.Errorf("%d sandboxes left", n)
	}
}

func TestAgentRemovesOrphansAndReportsInvalidManifests(t *testing.T) {
	e := newTestEnv(t, map[string]string{"bad.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec: {containers: []}\n"}, func(e *testEnv) {
		orphan := &v1.Pod{}
		orphan.Name, orphan.Namespace, orphan.UID = "gone", "default", "olduid"
		cfg, _ := makeSandboxConfig(orphan, 0, "/var/log/pods", dnsSettings{ResolvConf: "/nonexistent"}, nil)
		_, _ = e.rt.RunPodSandbox(context.Background(), cfg, "")
		// A sandbox somebody else (crictl, a kubelet) made: left alone.
		foreign := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "k", Namespace: "kube-system", Uid: "x"},
			Labels: map[string]string{labelPodUID: "x"}}
		_, _ = e.rt.RunPodSandbox(context.Background(), foreign, "")
	})
	waitFor(t, "orphan removed", func() bool { return e.count("RemovePodSandbox") == 1 })
	e.rt.Lock()
	n := len(e.rt.Sandboxes)
	e.rt.Unlock()
	if n != 1 {
		t.Errorf("%d sandboxes left, want the foreign one", n)
	}
	list := e.a.Pods()
	if len(list.Items) != 1 || list.Items[0].Status.Reason != "InvalidManifest" || !strings.Contains(list.Items[0].Status.Message, "at least one container") {
		t.Fatalf("pods: %+v", list.Items)
	}
}

func TestAgentLivenessFailureRestarts(t *testing.T) {
	fp := &fakeProber{updates: make(chan ProbeUpdate, 4)}
	pod := strings.Replace(simplePod, "  initContainers:\n  - name: init\n    image: busybox:1.36\n", "", 1)
	pod = strings.Replace(pod, "    ports:\n", "    livenessProbe: {exec: {command: [\"true\"]}}\n    ports:\n", 1)
	e := newTestEnv(t, map[string]string{"web.yaml": pod}, func(e *testEnv) {})
	e.stop()
	e.a.o.Prober = fp
	e.start()
	waitFor(t, "app running", func() bool { return containerRunning(e.pod("web"), "app") })
	p := e.pod("web")
	id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "peapod://")
	fp.updates <- ProbeUpdate{PodUID: p.UID, ContainerName: "app", ContainerID: id, Kind: ProbeLiveness, Result: ProbeFailure}
	waitFor(t, "container stopped", func() bool { return e.count("StopContainer") == 1 })
	// The fake runtime exits with code 0 on stop; Always restarts it.
	waitFor(t, "restarted", func() bool {
		p := e.pod("web")
		return containerRunning(p, "app") && p.Status.ContainerStatuses[0].RestartCount == 1
	})
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.added < 2 {
		t.Errorf("prober AddContainer called %d times", fp.added)
	}
}

type fakeProber struct {
	mu      sync.Mutex
	updates chan ProbeUpdate
	added   int
}

func (f *fakeProber) AddContainer(*v1.Pod, *v1.Container, string, string) {
	f.mu.Lock()
	f.added++
	f.mu.Unlock()
}
func (f *fakeProber) RemoveContainer(podUID types.UID, containerName string) {}
func (f *fakeProber) RemovePod(podUID types.UID)                             {}
func (f *fakeProber) Updates() <-chan ProbeUpdate                            { return f.updates }
func (f *fakeProber) Result(podUID types.UID, name string, k ProbeKind) ProbeResult {
	return ProbeSuccess
}

func counterValue(c prometheus.Counter) float64 {
	m := &dto.Metric{}
	_ = c.Write(m)
	return m.GetCounter().GetValue()
}

// histogramCount is the number of observations of an unlabelled histogram.
func histogramCount(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return int(mf.GetMetric()[0].GetHistogram().GetSampleCount())
		}
	}
	return 0
}

func TestAgentActiveDeadline(t *testing.T) {
	pod := strings.Replace(simplePod, "spec:\n", "spec:\n  activeDeadlineSeconds: 1\n", 1)
	pod = strings.Replace(pod, "  initContainers:\n  - name: init\n    image: busybox:1.36\n", "", 1)
	e := newTestEnv(t, map[string]string{"web.yaml": pod}, nil)
	waitFor(t, "app running", func() bool { return containerRunning(e.pod("web"), "app") })
	deadline := time.Now().Add(5 * time.Second)
	for e.pod("web").Status.Phase != v1.PodFailed {
		if time.Now().After(deadline) {
			t.Fatalf("not Failed 5 s after a 1 s deadline: %+v", e.pod("web").Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := e.pod("web").Status
	if st.Reason != "DeadlineExceeded" || st.Message != deadlineMessage {
		t.Errorf("reason %q message %q", st.Reason, st.Message)
	}
	if e.count("StopContainer") < 1 || e.count("StopPodSandbox") < 1 {
		t.Errorf("pod not stopped: %v", e.calls())
	}
	time.Sleep(100 * time.Millisecond)
	if n := e.count("CreateContainer"); n != 1 {
		t.Errorf("CreateContainer called %d times after the deadline", n)
	}
}
