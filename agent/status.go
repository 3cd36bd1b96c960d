package agent

import (
	"fmt"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"peapod/agent/podcgroups"
)

// statusInfo is what the worker knows beyond the CRI.
type statusInfo struct {
	Waiting   map[string]waitingInfo
	HostIPs   []string
	FirstSeen time.Time
	Message   string
	// RuntimeName prefixes container IDs as the kubelet does,
	// <runtime>://<id>, from the CRI's Version (default "peapod").
	RuntimeName string
	// FailedReason, when set, makes the pod Failed whatever its
	// containers say (DeadlineExceeded), with FailedMessage.
	FailedReason, FailedMessage string
	// FailedConditions are added to the conditions then.
	FailedConditions []v1.PodCondition
}

func (i statusInfo) containerID(id string) string {
	name := i.RuntimeName
	if name == "" {
		name = "peapod"
	}
	return name + "://" + id
}

// computePodStatus derives the v1.PodStatus of pod from observed state, as
// the kubelet's generateAPIPodStatus / getPhase.
func computePodStatus(pod *v1.Pod, st *PodStatusObserved, info statusInfo) v1.PodStatus {
	s := v1.PodStatus{Message: info.Message, QOSClass: podcgroups.QOSClass(pod)}
	sb := st.latestSandbox()
	sandboxReady := sb != nil && sb.Ready
	for _, ip := range info.HostIPs {
		s.HostIPs = append(s.HostIPs, v1.HostIP{IP: ip})
	}
	if len(info.HostIPs) > 0 {
		s.HostIP = info.HostIPs[0]
	}
	if sandboxReady {
		for _, ip := range sb.IPs {
			s.PodIPs = append(s.PodIPs, v1.PodIP{IP: ip})
		}
		if len(sb.IPs) > 0 {
			s.PodIP = sb.IPs[0]
		}
	}
	start := info.FirstSeen
	for _, x := range st.Sandboxes {
		if !x.CreatedAt.IsZero() && x.CreatedAt.Before(start) {
			start = x.CreatedAt
		}
	}
	if !start.IsZero() {
		t := metav1.NewTime(start)
		s.StartTime = &t
	}

	sbID := ""
	if sb != nil {
		sbID = sb.ID
	}
	initDone := true
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := containerStatus(c, st.latestIn(c.Name, sbID), st, info, "PodInitializing")
		if t := cs.State.Terminated; t != nil && t.ExitCode == 0 && !isSidecar(c) {
			// A completed init container is ready, as the kubelet reports it.
			cs.Ready = true
		}
		if isSidecar(c) {
			if cs.Started == nil || !*cs.Started {
				initDone = false
			}
		} else if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			initDone = false
		}
		s.InitContainerStatuses = append(s.InitContainerStatuses, cs)
	}
	waitReason := "ContainerCreating"
	if !initDone {
		waitReason = "PodInitializing"
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		s.ContainerStatuses = append(s.ContainerStatuses, containerStatus(c, st.latest(c.Name), st, info, waitReason))
	}
	for i := range pod.Spec.EphemeralContainers {
		c := ephemeralAsContainer(&pod.Spec.EphemeralContainers[i])
		s.EphemeralContainerStatuses = append(s.EphemeralContainerStatuses, containerStatus(c, st.latest(c.Name), st, info, "ContainerCreating"))
	}
	s.Phase = podPhase(pod, &s, initDone)
	if info.FailedReason != "" {
		s.Phase, s.Reason, s.Message = v1.PodFailed, info.FailedReason, info.FailedMessage
	}

	// Conditions.
	now := metav1.NewTime(st.Now)
	cond := func(t v1.PodConditionType, ok bool, reason, msg string) v1.PodCondition {
		c := v1.PodCondition{Type: t, Status: v1.ConditionFalse, LastTransitionTime: now, Reason: reason, Message: msg}
		if ok {
			c.Status, c.Reason, c.Message = v1.ConditionTrue, "", ""
		}
		return c
	}
	var notInit, notReady []string
	for i, cs := range s.InitContainerStatuses {
		spec := &pod.Spec.InitContainers[i]
		if isSidecar(spec) {
			if !cs.Ready {
				notReady = append(notReady, cs.Name)
			}
			if cs.Started == nil || !*cs.Started {
				notInit = append(notInit, cs.Name)
			}
		} else if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			notInit = append(notInit, cs.Name)
		}
	}
	for _, cs := range s.ContainerStatuses {
		if !cs.Ready {
			notReady = append(notReady, cs.Name)
		}
	}
	completed := s.Phase == v1.PodSucceeded || s.Phase == v1.PodFailed
	initialized := len(notInit) == 0 || (completed && initDone)
	readyReason, readyMsg := "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " "))
	if completed {
		readyReason, readyMsg = "PodCompleted", ""
	}
	ready := len(notReady) == 0 && !completed
	s.Conditions = []v1.PodCondition{
		cond(v1.PodReadyToStartContainers, sandboxReady, "", ""),
		cond(v1.PodInitialized, initialized, "ContainersNotInitialized", fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " "))),
		cond(v1.PodReady, ready, readyReason, readyMsg),
		cond(v1.ContainersReady, ready, readyReason, readyMsg),
		cond(v1.PodScheduled, true, "", ""),
	}
	if completed && len(pod.Spec.InitContainers) > 0 && initDone {
		s.Conditions[1].Reason = "PodCompleted"
	}
	if info.FailedReason != "" {
		s.Conditions = append(s.Conditions, info.FailedConditions...)
	}
	return s
}

// containerStatus is the v1.ContainerStatus of spec from its newest
// container c (nil: none yet).
func containerStatus(spec *v1.Container, c *ContainerObserved, st *PodStatusObserved, info statusInfo, defaultWaiting string) v1.ContainerStatus {
	cs := v1.ContainerStatus{Name: spec.Name, Image: spec.Image}
	f := false
	cs.Started = &f
	w, hasWaiting := info.Waiting[spec.Name]
	if c == nil {
		if !hasWaiting {
			w = waitingInfo{Reason: defaultWaiting}
		}
		cs.State.Waiting = &v1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
		return cs
	}
	cs.RestartCount = int32(c.Attempt)
	cs.ImageID = c.ImageRef
	cs.ContainerID = info.containerID(c.ID)
	if prev := st.previous(c); prev != nil && prev.exited() {
		cs.LastTerminationState.Terminated = terminatedState(prev, info)
	}
	switch {
	case c.running():
		cs.State.Running = &v1.ContainerStateRunning{StartedAt: metav1.NewTime(c.StartedAt)}
		started := c.Started
		cs.Started = &started
		cs.Ready = c.Ready
	case c.exited() && hasWaiting:
		// Waiting to restart: the exit is the last state.
		cs.State.Waiting = &v1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
		cs.LastTerminationState.Terminated = terminatedState(c, info)
	case c.exited():
		cs.State.Terminated = terminatedState(c, info)
	default:
		if !hasWaiting {
			w = waitingInfo{Reason: "ContainerCreating"}
		}
		cs.State.Waiting = &v1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
	}
	return cs
}

func terminatedState(c *ContainerObserved, info statusInfo) *v1.ContainerStateTerminated {
	reason := c.Reason
	if reason == "" {
		reason = "Completed"
		if c.ExitCode != 0 {
			reason = "Error"
		}
	}
	return &v1.ContainerStateTerminated{
		ExitCode:    c.ExitCode,
		Reason:      reason,
		Message:     c.Message,
		StartedAt:   metav1.NewTime(c.StartedAt),
		FinishedAt:  metav1.NewTime(c.FinishedAt),
		ContainerID: info.containerID(c.ID),
	}
}

// podPhase is the kubelet's getPhase.
func podPhase(pod *v1.Pod, s *v1.PodStatus, initDone bool) v1.PodPhase {
	if !initDone {
		for i, cs := range s.InitContainerStatuses {
			if isSidecar(&pod.Spec.InitContainers[i]) {
				continue
			}
			if t := cs.State.Terminated; t != nil && t.ExitCode != 0 && pod.Spec.RestartPolicy == v1.RestartPolicyNever {
				return v1.PodFailed
			}
		}
		return v1.PodPending
	}
	// stopped counts containers that exited for good; one that exited
	// but will restart (its own or the pod's policy says so) keeps the
	// pod Running, as the kubelet's getPhase with container restart rules.
	var running, waiting, stopped, succeeded int
	for i, cs := range s.ContainerStatuses {
		var spec *v1.Container
		if i < len(pod.Spec.Containers) {
			spec = &pod.Spec.Containers[i]
		}
		restarts := func(code int32) bool {
			if spec == nil {
				return shouldRestart(pod.Spec.RestartPolicy, code)
			}
			return containerShouldRestart(spec, pod.Spec.RestartPolicy, code)
		}
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			if restarts(cs.State.Terminated.ExitCode) {
				running++
				continue
			}
			stopped++
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case cs.State.Waiting != nil && cs.LastTerminationState.Terminated != nil:
			if restarts(cs.LastTerminationState.Terminated.ExitCode) {
				running++
				continue
			}
			stopped++
			if cs.LastTerminationState.Terminated.ExitCode == 0 {
				succeeded++
			}
		case cs.State.Waiting != nil:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return v1.PodPending
	case running > 0:
		return v1.PodRunning
	case stopped > 0 && stopped == succeeded:
		return v1.PodSucceeded
	case stopped > 0:
		return v1.PodFailed
	}
	return v1.PodPending
}

// sortPods orders a pod list by namespace, then name.
func sortPods(items []v1.Pod) {
	sort.Slice(items, func(i, j int) bool {
		if items[i].Namespace != items[j].Namespace {
			return items[i].Namespace < items[j].Namespace
		}
		return items[i].Name < items[j].Name
	})
}

// terminalPhase is the phase of a pod the node has stopped for good (its
// deletion): Succeeded when every regular container exited 0, else Failed,
// as the kubelet's getPhase with podIsTerminal.
func terminalPhase(s *v1.PodStatus) v1.PodPhase {
	for _, cs := range s.ContainerStatuses {
		t := cs.State.Terminated
		if t == nil || t.ExitCode != 0 {
			return v1.PodFailed
		}
	}
	return v1.PodSucceeded
}
