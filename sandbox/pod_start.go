package sandbox

import (
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Pod start duration
//
// A pod has started when a StartContainer leaves none of its containers
// CREATED (waiting to be started), at least one RUNNING and the rest
// completed (exited 0). Its start duration runs from the beginning of
// RunPodSandbox (the record's CreatedAt) to the end of that StartContainer.
// It is observed once per pod, and only while every container of the pod
// is a first attempt: a container restarted later is not a pod start, nor
// is a container added to a pod found on restart.
//
// Known limit: a pod with init containers counts as started when its first
// init container starts, since the CRI does not say which containers are
// init containers and the kubelet creates the app containers only later.

type podStarts struct {
	mu       sync.RWMutex
	observer func(sandboxID string, d time.Duration)
}

// OnPodStart registers fn, called once per pod with its start duration
// (see above). One observer; a later call replaces it.
func (m *Manager) OnPodStart(fn func(sandboxID string, d time.Duration)) {
	m.podStarts.mu.Lock()
	m.podStarts.observer = fn
	m.podStarts.mu.Unlock()
}

// observePodStart is called after a container of sb started.
func (m *Manager) observePodStart(sb *Sandbox) {
	m.podStarts.mu.RLock()
	fn := m.podStarts.observer
	m.podStarts.mu.RUnlock()
	if fn == nil || sb.startObserved.Load() {
		return
	}
	containers := m.containersOf(sb.ID())
	recs := make([]podStartContainer, 0, len(containers))
	for _, c := range containers {
		r := c.Record()
		recs = append(recs, podStartContainer{state: r.State, exitCode: r.ExitCode, attempt: c.Config().GetMetadata().GetAttempt()})
	}
	if !podStarted(recs) || !sb.startObserved.CompareAndSwap(false, true) {
		return
	}
	fn(sb.ID(), time.Since(time.Unix(0, sb.Record().CreatedAt)))
}

type podStartContainer struct {
	state    runtimeapi.ContainerState
	exitCode int32
	attempt  uint32
}

// podStarted decides whether a pod whose containers are cs has just started.
func podStarted(cs []podStartContainer) bool {
	running := false
	for _, c := range cs {
		if c.attempt != 0 {
			return false
		}
		switch c.state {
		case runtimeapi.ContainerState_CONTAINER_RUNNING:
			running = true
		case runtimeapi.ContainerState_CONTAINER_EXITED:
			if c.exitCode != 0 {
				return false
			}
		default:
			return false
		}
	}
	return running
}
