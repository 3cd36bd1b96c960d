// Package probes runs liveness, readiness and startup probes (exec,
// httpGet, tcpSocket, grpc) for the agent's containers and publishes their
// results, the way the kubelet's pkg/kubelet/prober does.
//
// One worker goroutine runs per (pod, container, probe kind). The Manager
// caches the established result of each and publishes changes on Updates;
// the agent acts on them (kills on liveness/startup Failure, sets Ready from
// readiness) and never waits for a probe.
//
// Per container (pod uid, container name):
//
//	AddContainer(pod, c, id1)
//	    │  results := defaults (liveness Success, readiness Failure,
//	    │            startup Unknown; Success for a kind without a probe)
//	    ▼
//	workers for id1 ──startup Success──► startup worker ends; liveness and
//	    │                                readiness stop being gated
//	    │ ──liveness or startup Failure──► that worker ends ("on hold"):
//	    │                                  the agent kills the container
//	    ▼
//	AddContainer(pod, c, id2)  ──► id1's workers stop; results := defaults;
//	    │                          workers for id2 (first result published)
//	    ▼
//	RemoveContainer / RemovePod ──► workers stop; entry and metric series gone
//
// Per worker:
//
//	wait(jitter, initial delay) ─► every period: gated by startup? ─► probe
//	  ─► decide(): count the run of equal results; a run reaching the
//	     success/failure threshold establishes the result ─► cache; publish
//	     if it changed (or is the first for this container id)
package probes

import (
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

type containerKey struct {
	podUID types.UID
	name   string
}

// entry is the manager's state for one container.
type entry struct {
	podName, podNamespace string
	containerID           string
	workers               [numKinds]*worker // nil: no probe of that kind, or ended
	hasProbe              [numKinds]bool
	results               [numKinds]Result
	reported              [numKinds]bool // a result was published for containerID
}

// Manager runs probe workers and caches their results.
type Manager struct {
	prober  *prober
	metrics *metrics
	clock   Clock
	unit    time.Duration
	updates chan Update

	mu         sync.Mutex
	containers map[containerKey]*entry
	stopped    bool
	queue      []Update      // published, not yet delivered on updates; in order
	queued     chan struct{} // cap 1: queue is not empty
	quit       chan struct{} // closed by Stop once the workers are gone
	dispatched chan struct{} // closed when the dispatcher has closed updates
	wg         sync.WaitGroup
}

// NewManager returns a Manager with no workers.
func NewManager(o Options) *Manager {
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.unit <= 0 {
		o.unit = time.Second
	}
	m := &Manager{
		prober:     newProber(o.Runtime),
		metrics:    newMetrics(o.Registerer),
		clock:      o.Clock,
		unit:       o.unit,
		updates:    make(chan Update),
		containers: map[containerKey]*entry{},
		queued:     make(chan struct{}, 1),
		quit:       make(chan struct{}),
		dispatched: make(chan struct{}),
	}
	go m.dispatch()
	return m
}

// Updates delivers result changes, and the first established result of each
// container id, in the order the results were cached (so a container's
// startup Success comes before its first liveness and readiness results).
// Probing never waits for the reader: undelivered updates queue up. Stop
// closes the channel, dropping what is still queued.
func (m *Manager) Updates() <-chan Update { return m.updates }

// dispatch moves queued updates to the updates channel.
func (m *Manager) dispatch() {
	defer close(m.dispatched)
	defer close(m.updates)
	for {
		m.mu.Lock()
		q := m.queue
		m.queue = nil
		m.mu.Unlock()
		for _, u := range q {
			select {
			case m.updates <- u:
			case <-m.quit:
				return
			}
		}
		select {
		case <-m.queued:
		case <-m.quit:
			return
		}
	}
}

// AddContainer starts workers for the probes of container c of pod, which
// runs as containerID in a pod whose IP is podIP. Call it when the
// container starts; calling it again with the same id does nothing, and a
// new id (the container was restarted) replaces the old workers and resets
// the container's results to their defaults without publishing them.
// The container's start time is taken from pod.Status when it lists this
// container id as running (so an agent restart does not replay initial
// delays), else it is now.
func (m *Manager) AddContainer(pod *v1.Pod, c *v1.Container, containerID, podIP string) {
	if containerID == "" {
		klog.InfoS("Probes: ignoring container without id", "pod", klog.KObj(pod), "containerName", c.Name)
		return
	}
	key := containerKey{pod.UID, c.Name}
	probes := [numKinds]*v1.Probe{Liveness: c.LivenessProbe, Readiness: c.ReadinessProbe, Startup: c.StartupProbe}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	e := m.containers[key]
	if e != nil && e.containerID == containerID {
		return
	}
	if e != nil {
		e.stopWorkers()
	}
	e = &entry{podName: pod.Name, podNamespace: pod.Namespace, containerID: containerID}
	m.containers[key] = e

	now := m.clock.Now()
	started := startedAt(pod, c.Name, containerID, now)
	for k := Kind(0); k < numKinds; k++ {
		e.results[k] = defaultResult(k, probes[k] != nil)
		if probes[k] == nil {
			continue
		}
		e.hasProbe[k] = true
		w := newWorker(m, k, key, pod, c, probes[k], containerID, podIP, started, now)
		e.workers[k] = w
		m.wg.Add(1)
		go w.run()
	}
}

// RemoveContainer stops the container's workers and forgets its results.
// Call it when the container stops for good (not when it is restarted:
// AddContainer with the new id does that).
func (m *Manager) RemoveContainer(podUID types.UID, containerName string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removeLocked(containerKey{podUID, containerName})
}

// RemovePod stops the workers of all the pod's containers.
func (m *Manager) RemovePod(podUID types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key := range m.containers {
		if key.podUID == podUID {
			m.removeLocked(key)
		}
	}
}

func (m *Manager) removeLocked(key containerKey) {
	e := m.containers[key]
	if e == nil {
		return
	}
	e.stopWorkers()
	delete(m.containers, key)
	// Series are keyed by namespace/pod/container, not uid: keep them while
	// another pod uid with the same names (a replaced static pod) probes.
	for k2, e2 := range m.containers {
		if k2.name == key.name && e2.podName == e.podName && e2.podNamespace == e.podNamespace {
			return
		}
	}
	m.metrics.deleteContainer(key.name, e.podName, e.podNamespace)
}

// Result returns the container's cached result for probe kind k: the
// default until a result is established (liveness Success, readiness
// Failure, startup Unknown), Success for a kind the container has no probe
// of, Unknown for a container the Manager does not know.
func (m *Manager) Result(podUID types.UID, containerName string, k Kind) Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.containers[containerKey{podUID, containerName}]
	if e == nil || k < 0 || k >= numKinds {
		return Unknown
	}
	return e.results[k]
}

// Stop stops all workers, waits for them and closes Updates.
func (m *Manager) Stop() {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return
	}
	m.stopped = true
	for key := range m.containers {
		m.removeLocked(key)
	}
	m.mu.Unlock()
	m.wg.Wait()
	close(m.quit)
	<-m.dispatched
}

func defaultResult(k Kind, hasProbe bool) Result {
	if !hasProbe {
		return Success
	}
	switch k {
	case Liveness:
		return Success
	case Readiness:
		return Failure
	}
	return Unknown
}

func (e *entry) stopWorkers() {
	for k, w := range e.workers {
		if w != nil {
			w.stop()
			e.workers[k] = nil
		}
	}
}

// startedAt is when the container started: its running state in the pod
// status when that names this container id, else now.
func startedAt(pod *v1.Pod, name, containerID string, now time.Time) time.Time {
	for _, list := range [][]v1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		for _, s := range list {
			if s.Name != name || s.State.Running == nil || s.State.Running.StartedAt.IsZero() {
				continue
			}
			if sameContainerID(s.ContainerID, containerID) {
				return s.State.Running.StartedAt.Time
			}
		}
	}
	return now
}

// sameContainerID compares ids with or without a "runtime://" prefix.
func sameContainerID(a, b string) bool {
	return stripScheme(a) == stripScheme(b)
}

func stripScheme(id string) string {
	for i := 0; i+2 < len(id); i++ {
		if id[i] == ':' && id[i+1] == '/' && id[i+2] == '/' {
			return id[i+3:]
		}
	}
	return id
}

// gated reports whether liveness and readiness probes of w's container
// must wait for its startup probe.
func (m *Manager) gated(w *worker) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.containers[w.key]
	if e == nil || e.containerID != w.containerID {
		return true
	}
	return e.hasProbe[Startup] && e.results[Startup] != Success
}

// set caches result r of worker w (if w is still current) and queues an
// Update when it changed or is the first for the container id. It returns
// false when w is no longer current.
// warn publishes a probe's warning (the kubelet makes a ProbeWarning
// event of each), whatever the cached result.
func (m *Manager) warn(w *worker, msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.containers[w.key]; e == nil || e.workers[w.kind] != w {
		return
	}
	m.queue = append(m.queue, Update{
		PodUID: w.key.podUID, PodName: w.podName, PodNamespace: w.podNamespace,
		ContainerName: w.key.name, ContainerID: w.containerID,
		Kind: w.kind, Result: Success, Message: truncate(msg, maxMessage), Warning: true,
	})
	select {
	case m.queued <- struct{}{}:
	default:
	}
}

func (m *Manager) set(w *worker, r Result, msg string) bool {
	m.mu.Lock()
	e := m.containers[w.key]
	if e == nil || e.workers[w.kind] != w {
		m.mu.Unlock()
		return false
	}
	old := e.results[w.kind]
	if e.reported[w.kind] && old == r {
		m.mu.Unlock()
		return true
	}
	e.results[w.kind] = r
	e.reported[w.kind] = true
	u := Update{
		PodUID: w.key.podUID, PodName: w.podName, PodNamespace: w.podNamespace,
		ContainerName: w.key.name, ContainerID: w.containerID,
		Kind: w.kind, Result: r, Message: truncate(msg, maxMessage),
	}
	m.queue = append(m.queue, u)
	select {
	case m.queued <- struct{}{}:
	default:
	}
	if w.kind == Startup && r == Success {
		if rw := e.workers[Readiness]; rw != nil {
			rw.poke() // probe readiness now rather than a period later
		}
	}
	m.mu.Unlock()

	kv := []any{"probeType", w.kind, "pod", klog.KRef(w.podNamespace, w.podName), "podUID", w.key.podUID,
		"containerName", w.key.name, "containerID", w.containerID, "result", r, "previous", old}
	if r == Failure {
		kv = append(kv, "output", u.Message)
	}
	if old == r {
		// The first result of a container id, equal to the default
		// (liveness Success, typically): published, hardly news.
		klog.V(2).InfoS("First probe result", kv...)
	} else {
		klog.InfoS("Probe result changed", kv...)
	}
	return true
}
