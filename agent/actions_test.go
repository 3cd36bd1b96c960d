package agent

import (
	"reflect"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var (
	tNow     = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	running  = runtimeapi.ContainerState_CONTAINER_RUNNING
	exited   = runtimeapi.ContainerState_CONTAINER_EXITED
	created  = runtimeapi.ContainerState_CONTAINER_CREATED
	always   = v1.ContainerRestartPolicyAlways
	sbReady  = &SandboxObserved{ID: "sb1", Attempt: 0, Ready: true}
	sbDead   = &SandboxObserved{ID: "sb1", Attempt: 0, Ready: false}
	sbReady2 = &SandboxObserved{ID: "sb2", Attempt: 1, Ready: true}
)

func testPod(policy v1.RestartPolicy, inits []string, containers ...string) *v1.Pod {
	p := &v1.Pod{}
	p.Name, p.Namespace, p.UID = "web", "default", "uid1"
	p.Spec.RestartPolicy = policy
	for _, n := range inits {
		p.Spec.InitContainers = append(p.Spec.InitContainers, v1.Container{Name: n, Image: "busybox"})
	}
	for _, n := range containers {
		p.Spec.Containers = append(p.Spec.Containers, v1.Container{Name: n, Image: "busybox"})
	}
	SetDefaultsPod(p)
	return p
}

func withSidecar(p *v1.Pod, i int) *v1.Pod {
	p.Spec.InitContainers[i].RestartPolicy = &always
	return p
}

func ctr(name, sandbox string, state runtimeapi.ContainerState, exit int32) *ContainerObserved {
	c := &ContainerObserved{ID: sandbox + "_" + name, Name: name, SandboxID: sandbox, State: state, ExitCode: exit, Started: state == running}
	if state == exited {
		c.FinishedAt = tNow.Add(-time.Second)
	}
	return c
}

func TestComputePodActions(t *testing.T) {
	backingOff := ctr("app", "sb1", exited, 1)
	backingOff.BackOffUntil = tNow.Add(15 * time.Second)
	backingOff.BackOffDelay = 20 * time.Second
	backOffDone := ctr("app", "sb1", exited, 1)
	backOffDone.BackOffUntil = tNow.Add(-time.Second)
	backOffDone.BackOffDelay = 20 * time.Second
	liveFail := ctr("app", "sb1", running, 0)
	liveFail.ProbeFailed = "liveness"
	changed := ctr("app", "sb1", running, 0)
	changed.Hash = "deadbeef"
	sidecarNotStarted := ctr("proxy", "sb1", running, 0)
	sidecarNotStarted.Started = false
	initBackingOff := ctr("init1", "sb1", exited, 2)
	initBackingOff.BackOffUntil = tNow.Add(5 * time.Second)
	initBackingOff.BackOffDelay = 10 * time.Second

	for _, tc := range []struct {
		name       string
		pod        *v1.Pod
		sandboxes  []*SandboxObserved
		containers []*ContainerObserved
		want       podActions
	}{
		{
			name: "new pod",
			pod:  testPod(v1.RestartPolicyAlways, nil, "app", "side"),
			want: podActions{CreateSandbox: true, ContainersToStart: []int{0, 1}},
		},
		{
			name: "new pod with init containers starts the first only",
			pod:  testPod(v1.RestartPolicyAlways, []string{"init1", "init2"}, "app"),
			want: podActions{CreateSandbox: true, InitContainersToStart: []int{0}},
		},
		{
			name:       "all running: nothing to do",
			pod:        testPod(v1.RestartPolicyAlways, nil, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("app", "sb1", running, 0)},
			want:       podActions{SandboxID: "sb1"},
		},
		{
			name:       "sandbox died: kill and recreate",
			pod:        testPod(v1.RestartPolicyAlways, nil, "app"),
			sandboxes:  []*SandboxObserved{sbDead},
			containers: []*ContainerObserved{ctr("app", "sb1", running, 0)},
			want:       podActions{KillPod: true, CreateSandbox: true, Attempt: 1, ContainersToStart: []int{0}},
		},
		{
			name:       "sandbox died, Never: terminal",
			pod:        testPod(v1.RestartPolicyNever, nil, "app"),
			sandboxes:  []*SandboxObserved{sbDead},
			containers: []*ContainerObserved{ctr("app", "sb1", exited, 0)},
			want:       podActions{Attempt: 1, Terminal: true},
		},
		{
			name:       "sandbox died, OnFailure: only failed containers restart",
			pod:        testPod(v1.RestartPolicyOnFailure, nil, "ok", "bad"),
			sandboxes:  []*SandboxObserved{sbDead},
			containers: []*ContainerObserved{ctr("ok", "sb1", exited, 0), ctr("bad", "sb1", exited, 1)},
			want:       podActions{CreateSandbox: true, Attempt: 1, ContainersToStart: []int{1}},
		},
		{
			name:       "sandbox died, OnFailure, all succeeded: terminal",
			pod:        testPod(v1.RestartPolicyOnFailure, nil, "ok"),
			sandboxes:  []*SandboxObserved{sbDead},
			containers: []*ContainerObserved{ctr("ok", "sb1", exited, 0)},
			want:       podActions{Attempt: 1, Terminal: true},
		},
		{
			name:       "init containers run in order",
			pod:        testPod(v1.RestartPolicyAlways, []string{"init1", "init2"}, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("init1", "sb1", exited, 0)},
			want:       podActions{SandboxID: "sb1", InitContainersToStart: []int{1}},
		},
		{
			name:       "init container running: wait",
			pod:        testPod(v1.RestartPolicyAlways, []string{"init1", "init2"}, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("init1", "sb1", running, 0)},
			want:       podActions{SandboxID: "sb1"},
		},
		{
			name:       "init containers done: regular containers start",
			pod:        testPod(v1.RestartPolicyAlways, []string{"init1", "init2"}, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("init2", "sb1", exited, 0), ctr("init1", "sb1", exited, 0)},
			want:       podActions{SandboxID: "sb1", ContainersToStart: []int{0}},
		},
		{
			name:       "init containers of an older sandbox do not count",
			pod:        testPod(v1.RestartPolicyAlways, []string{"init1"}, "app"),
			sandboxes:  []*SandboxObserved{sbReady2, sbDead},
			containers: []*ContainerObserved{ctr("init1", "sb1", exited, 0)},
			want:       podActions{SandboxID: "sb2", InitContainersToStart: []int{0}},
		},
		{
			name:       "init failure, Always: restart it",
			pod:        testPod(v1.RestartPolicyAlways, []string{"init1", "init2"}, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("init1", "sb1", exited, 2)},
			want:       podActions{SandboxID: "sb1", InitContainersToStart: []int{0}},
		},
		{
			name:       "init failure, OnFailure: restart it",
			pod:        testPod(v1.RestartPolicyOnFailure, []string{"init1"}, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("init1", "sb1", exited, 2)},
			want:       podActions{SandboxID: "sb1", InitContainersToStart: []int{0}},
		},
		{
			name:       "init failure, Never: pod fails",
			pod:        testPod(v1.RestartPolicyNever, []string{"init1"}, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("init1", "sb1", exited, 2)},
			want:       podActions{SandboxID: "sb1", KillPod: true, Terminal: true},
		},
		{
			name:       "init failure in back-off",
			pod:        testPod(v1.RestartPolicyAlways, []string{"init1"}, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{initBackingOff},
			want: podActions{SandboxID: "sb1", BackOff: []backOffWait{{Name: "init1", Init: true, Until: tNow.Add(5 * time.Second),
				Message: "back-off 10s restarting failed container=init1 pod=web_default(uid1)"}}},
		},
		{
			name:       "sidecar started, then the next init container",
			pod:        withSidecar(testPod(v1.RestartPolicyAlways, []string{"proxy", "init2"}, "app"), 0),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("proxy", "sb1", running, 0)},
			want:       podActions{SandboxID: "sb1", InitContainersToStart: []int{1}},
		},
		{
			name:       "sidecar not yet started (startup probe): wait",
			pod:        withSidecar(testPod(v1.RestartPolicyAlways, []string{"proxy", "init2"}, "app"), 0),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{sidecarNotStarted},
			want:       podActions{SandboxID: "sb1"},
		},
		{
			name:       "sidecar crashed after the sequence: restarted beside the app",
			pod:        withSidecar(testPod(v1.RestartPolicyAlways, []string{"proxy"}, "app"), 0),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("proxy", "sb1", exited, 1), ctr("app", "sb1", running, 0)},
			want:       podActions{SandboxID: "sb1", InitContainersToStart: []int{0}},
		},
		{
			name:       "container exited, Always: restart",
			pod:        testPod(v1.RestartPolicyAlways, nil, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("app", "sb1", exited, 0)},
			want:       podActions{SandboxID: "sb1", ContainersToStart: []int{0}},
		},
		{
			name:       "container failed, OnFailure: restart",
			pod:        testPod(v1.RestartPolicyOnFailure, nil, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("app", "sb1", exited, 1)},
			want:       podActions{SandboxID: "sb1", ContainersToStart: []int{0}},
		},
		{
			name:       "container succeeded, OnFailure: pod done",
			pod:        testPod(v1.RestartPolicyOnFailure, nil, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("app", "sb1", exited, 0)},
			want:       podActions{SandboxID: "sb1", KillPod: true, Terminal: true},
		},
		{
			name:       "one of two succeeded, OnFailure: keep running",
			pod:        testPod(v1.RestartPolicyOnFailure, nil, "a", "b"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("a", "sb1", exited, 0), ctr("b", "sb1", running, 0)},
			want:       podActions{SandboxID: "sb1"},
		},
		{
			name:       "container failed, Never: pod done, sidecar stopped",
			pod:        withSidecar(testPod(v1.RestartPolicyNever, []string{"proxy"}, "app"), 0),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("app", "sb1", exited, 1), ctr("proxy", "sb1", running, 0)},
			want:       podActions{SandboxID: "sb1", KillPod: true, Terminal: true},
		},
		{
			name:       "back-off pending",
			pod:        testPod(v1.RestartPolicyAlways, nil, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{backingOff},
			want: podActions{SandboxID: "sb1", BackOff: []backOffWait{{Name: "app", Until: tNow.Add(15 * time.Second),
				Message: "back-off 20s restarting failed container=app pod=web_default(uid1)"}}},
		},
		{
			name:       "back-off over",
			pod:        testPod(v1.RestartPolicyAlways, nil, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{backOffDone},
			want:       podActions{SandboxID: "sb1", ContainersToStart: []int{0}},
		},
		{
			name:       "spec hash changed: kill and start",
			pod:        testPod(v1.RestartPolicyAlways, nil, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{changed},
			want: podActions{SandboxID: "sb1", ContainersToStart: []int{0},
				ContainersToKill: []containerToKill{{ID: "sb1_app", Name: "app", Reason: "container spec changed"}}},
		},
		{
			name:       "liveness failed: kill",
			pod:        testPod(v1.RestartPolicyAlways, nil, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{liveFail},
			want: podActions{SandboxID: "sb1",
				ContainersToKill: []containerToKill{{ID: "sb1_app", Name: "app", Reason: "failed liveness probe"}}},
		},
		{
			name:       "created but never started: replaced",
			pod:        testPod(v1.RestartPolicyAlways, nil, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("app", "sb1", created, 0)},
			want: podActions{SandboxID: "sb1", ContainersToStart: []int{0},
				ContainersToKill: []containerToKill{{ID: "sb1_app", Name: "app", Reason: "container not running"}}},
		},
		{
			name:       "container not in spec: killed",
			pod:        testPod(v1.RestartPolicyAlways, nil, "app"),
			sandboxes:  []*SandboxObserved{sbReady},
			containers: []*ContainerObserved{ctr("app", "sb1", running, 0), ctr("old", "sb1", running, 0)},
			want: podActions{SandboxID: "sb1",
				ContainersToKill: []containerToKill{{ID: "sb1_old", Name: "old", Reason: "not in the pod spec"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &PodStatusObserved{Now: tNow, Sandboxes: tc.sandboxes, Containers: tc.containers}
			for _, c := range st.Containers {
				if c.Hash == "" {
					if s := findContainer(tc.pod, c.Name); s != nil {
						c.Hash = containerHash(s)
					}
				}
			}
			got := computePodActions(tc.pod, st)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("computePodActions:\n got  %+v\n want %+v", got, tc.want)
			}
		})
	}
}

func TestEphemeralContainerActions(t *testing.T) {
	pod := testPod(v1.RestartPolicyAlways, nil, "app")
	pod.Spec.EphemeralContainers = []v1.EphemeralContainer{{EphemeralContainerCommon: v1.EphemeralContainerCommon{Name: "debug", Image: "busybox"}, TargetContainerName: "app"}}
	for _, tc := range []struct {
		name       string
		containers []*ContainerObserved
		want       []int
	}{
		{"started in the running sandbox", []*ContainerObserved{ctr("app", "sb1", running, 0)}, []int{0}},
		{"running: left alone", []*ContainerObserved{ctr("debug", "sb1", running, 0), ctr("app", "sb1", running, 0)}, nil},
		{"exited: never restarted", []*ContainerObserved{ctr("debug", "sb1", exited, 1), ctr("app", "sb1", running, 0)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := computePodActions(pod, &PodStatusObserved{Now: tNow, Sandboxes: []*SandboxObserved{sbReady}, Containers: tc.containers})
			if !reflect.DeepEqual(a.EphemeralContainersToStart, tc.want) {
				t.Errorf("ephemeral to start %v, want %v", a.EphemeralContainersToStart, tc.want)
			}
			for _, k := range a.ContainersToKill {
				if k.Name == "debug" {
					t.Errorf("ephemeral container killed: %+v", k)
				}
			}
		})
	}
}

func TestContainerShouldRestart(t *testing.T) {
	always, never := v1.ContainerRestartPolicyAlways, v1.ContainerRestartPolicyNever
	rules := []v1.ContainerRestartRule{{Action: v1.ContainerRestartRuleActionRestart,
		ExitCodes: &v1.ContainerRestartRuleOnExitCodes{Operator: v1.ContainerRestartRuleOnExitCodesOpIn, Values: []int32{42}}}}
	for _, tc := range []struct {
		name   string
		c      v1.Container
		pod    v1.RestartPolicy
		code   int32
		expect bool
	}{
		{"pod policy alone", v1.Container{}, v1.RestartPolicyOnFailure, 1, true},
		{"pod policy, success", v1.Container{}, v1.RestartPolicyOnFailure, 0, false},
		{"container Always in a Never pod", v1.Container{RestartPolicy: &always}, v1.RestartPolicyNever, 0, true},
		{"container Never in an Always pod", v1.Container{RestartPolicy: &never}, v1.RestartPolicyAlways, 1, false},
		{"rule matches", v1.Container{RestartPolicy: &never, RestartPolicyRules: rules}, v1.RestartPolicyNever, 42, true},
		{"rule does not match: container policy", v1.Container{RestartPolicy: &never, RestartPolicyRules: rules}, v1.RestartPolicyAlways, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := containerShouldRestart(&tc.c, tc.pod, tc.code); got != tc.expect {
				t.Errorf("got %v, want %v", got, tc.expect)
			}
		})
	}
}

// A container whose own policy says Never ends an Always pod when it exits.
func TestContainerLevelNeverEndsPod(t *testing.T) {
	never := v1.ContainerRestartPolicyNever
	pod := testPod(v1.RestartPolicyAlways, nil, "app")
	pod.Spec.Containers[0].RestartPolicy = &never
	a := computePodActions(pod, &PodStatusObserved{Now: tNow, Sandboxes: []*SandboxObserved{sbReady}, Containers: []*ContainerObserved{ctr("app", "sb1", exited, 1)}})
	if !a.Terminal || len(a.ContainersToStart) != 0 {
		t.Errorf("actions %+v, want terminal", a)
	}
	s := v1.PodStatus{ContainerStatuses: []v1.ContainerStatus{{Name: "app", State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 1}}}}}
	if got := podPhase(pod, &s, true); got != v1.PodFailed {
		t.Errorf("phase %s, want Failed", got)
	}
}
