package agent

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The decide half of a pod sync: computePodActions is a pure function from
// the pod spec and what the runtime reports (PodStatusObserved) to a
// podActions plan, which the pod worker executes (worker.go). Modelled on
// the kubelet's kuberuntime_manager computePodActions.

// PodStatusObserved is the pod's state as read from the CRI, plus what the
// agent knows about it (probe results, back-off).
type PodStatusObserved struct {
	Now time.Time
	// Sandboxes of the pod, newest first.
	Sandboxes []*SandboxObserved
	// Containers of the pod in all its sandboxes, newest first for each name.
	Containers []*ContainerObserved
}

// SandboxObserved is one pod sandbox.
type SandboxObserved struct {
	ID        string
	Attempt   uint32
	Ready     bool
	CreatedAt time.Time
	IPs       []string
}

// ContainerObserved is one container (one attempt) of the pod.
type ContainerObserved struct {
	ID, Name   string
	SandboxID  string
	Attempt    uint32
	State      runtimeapi.ContainerState
	ExitCode   int32
	Reason     string
	Message    string
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
	// Hash is the container spec hash it was created from (annotation).
	Hash     string
	Image    string
	ImageRef string

	// ProbeFailed is the probe whose failure the prober reported for this
	// id ("liveness" or "startup"; both restart the container), or "".
	ProbeFailed string
	// Started: running and its startup probe succeeded (or it has none).
	Started bool
	// Ready: running, started and its readiness probe succeeded (or none).
	Ready bool
	// BackOffUntil is set on an exited container whose restart must wait
	// (with the current back-off delay).
	BackOffUntil time.Time
	BackOffDelay time.Duration
}

func (c *ContainerObserved) running() bool {
	return c.State == runtimeapi.ContainerState_CONTAINER_RUNNING
}

func (c *ContainerObserved) exited() bool {
	return c.State == runtimeapi.ContainerState_CONTAINER_EXITED
}

// latestSandbox is the newest sandbox, or nil.
func (s *PodStatusObserved) latestSandbox() *SandboxObserved {
	if s == nil || len(s.Sandboxes) == 0 {
		return nil
	}
	return s.Sandboxes[0]
}

// latest is the newest container named name (in any sandbox), or nil.
func (s *PodStatusObserved) latest(name string) *ContainerObserved {
	for _, c := range s.Containers {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// previous is the container attempt before cur of the same name, or nil.
func (s *PodStatusObserved) previous(cur *ContainerObserved) *ContainerObserved {
	seen := false
	for _, c := range s.Containers {
		if c.Name != cur.Name {
			continue
		}
		if seen {
			return c
		}
		seen = c == cur
	}
	return nil
}

// latestIn is the newest container named name in sandbox id, or nil.
func (s *PodStatusObserved) latestIn(name, sandboxID string) *ContainerObserved {
	for _, c := range s.Containers {
		if c.Name == name && c.SandboxID == sandboxID {
			return c
		}
	}
	return nil
}

// podActions is the plan of one sync.
type podActions struct {
	// KillPod: stop every container and the sandbox.
	KillPod bool
	// CreateSandbox: run a new sandbox (Attempt) and start from there.
	CreateSandbox bool
	Attempt       uint32
	// SandboxID is the sandbox to start containers in when not creating.
	SandboxID string
	// InitContainersToStart and ContainersToStart are indexes in
	// spec.initContainers and spec.containers, in start order.
	InitContainersToStart []int
	ContainersToStart     []int
	// EphemeralContainersToStart are indexes in spec.ephemeralContainers:
	// each starts once, in the running sandbox, and never restarts.
	EphemeralContainersToStart []int
	// ContainersToKill are stopped (with the pod's grace period, preStop
	// first) before anything starts.
	ContainersToKill []containerToKill
	// BackOff are containers whose restart waits.
	BackOff []backOffWait
	// Terminal: the pod completed (Succeeded or Failed); nothing starts again.
	Terminal bool
}

type containerToKill struct {
	ID, Name string
	Reason   string
}

type backOffWait struct {
	Name    string
	Init    bool
	Until   time.Time
	Message string
}

// containerHash is the hash of a container spec, stored in the
// io.kubernetes.container.hash annotation and part of the back-off key.
func containerHash(c *v1.Container) string {
	b, _ := json.Marshal(c)
	h := fnv.New32a()
	h.Write(b)
	return strconv.FormatUint(uint64(h.Sum32()), 16)
}

// containerShouldRestart tells whether regular container c restarts after
// exiting with exitCode, as the kubelet's ContainerShouldRestart: its
// restartPolicyRules first (the first whose exit codes match decides),
// then its own restartPolicy, then the pod's.
func containerShouldRestart(c *v1.Container, policy v1.RestartPolicy, exitCode int32) bool {
	if c.RestartPolicy != nil {
		for _, r := range c.RestartPolicyRules {
			if r.ExitCodes == nil || !exitCodesMatch(r.ExitCodes, exitCode) {
				continue
			}
			if r.Action == v1.ContainerRestartRuleActionRestart {
				return true
			}
			break // RestartAllContainers is alpha (off): the container's policy decides
		}
		switch *c.RestartPolicy {
		case v1.ContainerRestartPolicyAlways:
			return true
		case v1.ContainerRestartPolicyOnFailure:
			return exitCode != 0
		case v1.ContainerRestartPolicyNever:
			return false
		}
	}
	return shouldRestart(policy, exitCode)
}

func exitCodesMatch(e *v1.ContainerRestartRuleOnExitCodes, code int32) bool {
	in := slices.Contains(e.Values, code)
	switch e.Operator {
	case v1.ContainerRestartRuleOnExitCodesOpIn:
		return in
	case v1.ContainerRestartRuleOnExitCodesOpNotIn:
		return !in
	}
	return false
}

// shouldRestart tells whether an exited container restarts under policy.
func shouldRestart(policy v1.RestartPolicy, exitCode int32) bool {
	switch policy {
	case v1.RestartPolicyAlways:
		return true
	case v1.RestartPolicyOnFailure:
		return exitCode != 0
	}
	return false
}

func backOffMessage(pod *v1.Pod, name string, delay time.Duration) string {
	return fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", delay, name, pod.Name, pod.Namespace, pod.UID)
}

// computePodActions decides what a sync of pod does, given observed status.
func computePodActions(pod *v1.Pod, st *PodStatusObserved) podActions {
	var a podActions
	sb := st.latestSandbox()
	policy := pod.Spec.RestartPolicy
	anyRunning := false
	for _, c := range st.Containers {
		if c.running() {
			anyRunning = true
		}
	}

	// inBackOff records a wait when c (the last exited attempt) must not
	// restart yet.
	inBackOff := func(name string, init bool, c *ContainerObserved) bool {
		if c == nil || !c.exited() || c.BackOffUntil.IsZero() || !st.Now.Before(c.BackOffUntil) {
			return false
		}
		a.BackOff = append(a.BackOff, backOffWait{Name: name, Init: init, Until: c.BackOffUntil, Message: backOffMessage(pod, name, c.BackOffDelay)})
		return true
	}

	if sb == nil || !sb.Ready {
		// A new sandbox is needed (first start, or the sandbox died).
		a.KillPod = (sb != nil && sb.Ready) || anyRunning
		if sb != nil {
			a.Attempt = sb.Attempt + 1
		}
		if policy == v1.RestartPolicyNever && sb != nil && len(st.Containers) > 0 {
			a.Terminal = true
			return a
		}
		var toStart []int
		for i := range pod.Spec.Containers {
			c := &pod.Spec.Containers[i]
			last := st.latest(c.Name)
			if last != nil && last.exited() && !containerShouldRestart(c, policy, last.ExitCode) {
				continue
			}
			toStart = append(toStart, i)
		}
		if len(toStart) == 0 {
			a.Terminal = true
			return a
		}
		a.CreateSandbox = true
		if len(pod.Spec.InitContainers) > 0 {
			c := &pod.Spec.InitContainers[0]
			if !inBackOff(c.Name, true, st.latest(c.Name)) {
				a.InitContainersToStart = []int{0}
			}
			return a
		}
		for _, i := range toStart {
			c := &pod.Spec.Containers[i]
			if !inBackOff(c.Name, false, st.latest(c.Name)) {
				a.ContainersToStart = append(a.ContainersToStart, i)
			}
		}
		return a
	}

	a.SandboxID = sb.ID
	kill := func(c *ContainerObserved, reason string) {
		a.ContainersToKill = append(a.ContainersToKill, containerToKill{ID: c.ID, Name: c.Name, Reason: reason})
	}

	// Running containers that are not (any longer) in the spec, or that run
	// in an older sandbox, are killed.
	for _, c := range st.Containers {
		if !c.running() {
			continue
		}
		if findContainer(pod, c.Name) == nil {
			kill(c, "not in the pod spec")
		} else if c.SandboxID != sb.ID {
			kill(c, "in an old sandbox")
		}
	}

	// Ephemeral containers start once the sandbox runs, even while init
	// containers do (as the kubelet's), and never again.
	for i := range pod.Spec.EphemeralContainers {
		if st.latest(pod.Spec.EphemeralContainers[i].Name) == nil {
			a.EphemeralContainersToStart = append(a.EphemeralContainersToStart, i)
		}
	}

	// Init containers, in order, within the current sandbox.
	if !computeInitActions(pod, st, sb, &a, inBackOff, kill) {
		return a
	}

	// Regular containers.
	running, pending := 0, 0
	for i := range pod.Spec.Containers {
		spec := &pod.Spec.Containers[i]
		c := st.latest(spec.Name)
		switch {
		case c == nil:
			a.ContainersToStart = append(a.ContainersToStart, i)
		case c.running() && c.SandboxID == sb.ID:
			switch {
			case c.Hash != "" && c.Hash != containerHash(spec):
				kill(c, "container spec changed")
				a.ContainersToStart = append(a.ContainersToStart, i)
			case c.ProbeFailed != "":
				// Killed now; the next sync restarts it per policy (it
				// exits non-zero) with back-off.
				kill(c, "failed "+c.ProbeFailed+" probe")
				pending++
			default:
				running++
			}
		case c.running():
			// In an old sandbox: killed above.
			a.ContainersToStart = append(a.ContainersToStart, i)
		case c.exited():
			if !containerShouldRestart(spec, policy, c.ExitCode) {
				continue
			}
			if inBackOff(spec.Name, false, c) {
				pending++
				continue
			}
			a.ContainersToStart = append(a.ContainersToStart, i)
		default:
			// Created but never started, or unknown: replace it.
			kill(c, "container not running")
			a.ContainersToStart = append(a.ContainersToStart, i)
		}
	}
	if running == 0 && pending == 0 && len(a.ContainersToStart) == 0 {
		// Every regular container has terminated for good: the pod is done;
		// sidecars and the sandbox are stopped.
		a.Terminal = true
		a.KillPod = sb.Ready || anyRunning
		a.ContainersToKill = nil
		a.InitContainersToStart = nil
		a.BackOff = nil
	}
	return a
}

// computeInitActions plans the init containers; it returns true when they
// are all done (regular ones succeeded, sidecars started), so regular
// containers may run.
func computeInitActions(pod *v1.Pod, st *PodStatusObserved, sb *SandboxObserved, a *podActions,
	inBackOff func(string, bool, *ContainerObserved) bool, kill func(*ContainerObserved, string)) bool {
	inits := pod.Spec.InitContainers
	// progressedPast tells whether a container after init i already ran in
	// this sandbox (so a crashed sidecar does not block the sequence again).
	progressedPast := func(i int) bool {
		for j := i + 1; j < len(inits); j++ {
			if st.latestIn(inits[j].Name, sb.ID) != nil {
				return true
			}
		}
		for j := range pod.Spec.Containers {
			if st.latestIn(pod.Spec.Containers[j].Name, sb.ID) != nil {
				return true
			}
		}
		return false
	}
	for i := range inits {
		spec := &inits[i]
		c := st.latestIn(spec.Name, sb.ID)
		if isSidecar(spec) {
			switch {
			case c == nil:
				a.InitContainersToStart = append(a.InitContainersToStart, i)
				return false
			case c.running():
				if c.Hash != "" && c.Hash != containerHash(spec) {
					kill(c, "container spec changed")
					a.InitContainersToStart = append(a.InitContainersToStart, i)
					return false
				}
				if c.ProbeFailed != "" {
					kill(c, "failed "+c.ProbeFailed+" probe")
				}
				if !c.Started && !progressedPast(i) {
					return false // wait for its startup probe
				}
			default:
				if !c.exited() {
					kill(c, "container not running")
				}
				if !inBackOff(spec.Name, true, c) {
					a.InitContainersToStart = append(a.InitContainersToStart, i)
				}
				if !progressedPast(i) {
					return false
				}
			}
			continue
		}
		switch {
		case c == nil:
			a.InitContainersToStart = append(a.InitContainersToStart, i)
			return false
		case c.running():
			return false
		case c.exited() && c.ExitCode == 0:
			continue
		case c.exited():
			if pod.Spec.RestartPolicy == v1.RestartPolicyNever {
				a.KillPod = true
				a.Terminal = true
				a.InitContainersToStart = nil
				a.ContainersToKill = nil
				return false
			}
			if !inBackOff(spec.Name, true, c) {
				a.InitContainersToStart = append(a.InitContainersToStart, i)
			}
			return false
		default:
			kill(c, "container not running")
			a.InitContainersToStart = append(a.InitContainersToStart, i)
			return false
		}
	}
	return true
}
