// Package eviction is the node's eviction manager, after the kubelet's
// pkg/kubelet/eviction: it watches the node's memory, disks and pids
// against the configured thresholds, reports the pressure conditions,
// frees node-level resources (dead containers, unused images) and, when
// that is not enough, evicts one pod at a time.
//
// Each threshold, as Synchronize sees it on every pass:
//
//	NOT MET --available < value--> MET --met for its grace period (hard: 0)--> ACTIONABLE
//	   ^                            |                                           |
//	   +---- available >= value ----+     available >= value + min reclaim -----+
//
// An ACTIONABLE threshold whose figures are newer than on the last pass
// starts reclaim: node-level first (disk), then the eviction of the first
// pod in rank order that could be killed.
//
// Each node condition (MemoryPressure, DiskPressure, PIDPressure):
//
//	False --a threshold of its resource MET--> True --none MET for PressureTransitionPeriod--> False
//
// The conditions gate admission (Admit) and go into the node's status
// (Pressure).
package eviction

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Options configure a Manager.
type Options struct {
	// Thresholds are what the manager enforces (ParseThresholds); none
	// makes Synchronize a no-op.
	Thresholds []Threshold
	// PressureTransitionPeriod keeps a pressure condition True this long
	// after its last threshold was met, so it does not flap
	// (eviction_pressure_transition_period). Default 5m.
	PressureTransitionPeriod time.Duration
	// MonitoringPeriod is how often Run synchronizes. Default 10s.
	MonitoringPeriod time.Duration
	// MaxPodGracePeriod (eviction_max_pod_grace_period), when positive,
	// caps the grace period in seconds of pods evicted for a soft
	// threshold; hard evictions give none.
	MaxPodGracePeriod int64
	// Summary reads the node's and pods' figures.
	Summary func(ctx context.Context) (*statsapi.Summary, error)
	// ActivePods are the pods that may be evicted: admitted and not in a
	// terminal phase.
	ActivePods func() []*v1.Pod
	// KillPod stops the pod with the given grace period and records its
	// status (phase Failed, reason Evicted, message, the DisruptionTarget
	// condition); it returns when the pod is stopped or ctx ends.
	KillPod func(ctx context.Context, pod *v1.Pod, status v1.PodStatus, gracePeriod *int64) error
	// ReclaimImages deletes unused images; it relieves imagefs, and nodefs
	// when the images are on the node's filesystem. Nil: no image reclaim.
	ReclaimImages func(ctx context.Context) error
	// ReclaimContainers removes dead containers, with the same reach. Nil:
	// no container reclaim.
	ReclaimContainers func(ctx context.Context) error
	// Clock is the time; default time.Now (tests set it).
	Clock func() time.Time
}

const (
	defaultPressureTransitionPeriod = 5 * time.Minute
	defaultMonitoringPeriod         = 10 * time.Second
	// settleAfterEviction is the pause after an eviction before the next
	// pass, so it sees the figures without the evicted pod (the kubelet
	// polls for the pod's cleanup every second).
	settleAfterEviction = time.Second
)

// Manager enforces the eviction thresholds; its methods are safe for
// concurrent use.
type Manager struct {
	o Options

	// syncMu makes Synchronize passes one at a time; it guards the fields
	// only Synchronize uses.
	syncMu sync.Mutex
	// firstMet is when each MET threshold (index in o.Thresholds) was
	// first seen met.
	firstMet map[int]time.Time
	// actionable are the thresholds past their grace period and not yet
	// resolved with their minimum reclaim.
	actionable []int
	// conditionSeen is when each condition last had a threshold met.
	conditionSeen map[v1.NodeConditionType]time.Time
	// last are the previous pass's observations.
	last Observations

	mu sync.RWMutex
	// conditions are the node's pressure conditions now.
	conditions []v1.NodeConditionType
}

// New returns a Manager; Summary, ActivePods and KillPod are required.
func New(o Options) (*Manager, error) {
	if o.Summary == nil || o.ActivePods == nil || o.KillPod == nil {
		return nil, errors.New("eviction: Summary, ActivePods and KillPod are required")
	}
	if o.PressureTransitionPeriod < 0 || o.MonitoringPeriod < 0 || o.MaxPodGracePeriod < 0 {
		return nil, fmt.Errorf("eviction: negative period (pressure transition %v, monitoring %v, max pod grace %ds)",
			o.PressureTransitionPeriod, o.MonitoringPeriod, o.MaxPodGracePeriod)
	}
	for _, t := range o.Thresholds {
		if resourceOf(t.Signal) == "" {
			return nil, fmt.Errorf("eviction: unknown signal %q", t.Signal)
		}
	}
	if o.PressureTransitionPeriod == 0 {
		o.PressureTransitionPeriod = defaultPressureTransitionPeriod
	}
	if o.MonitoringPeriod == 0 {
		o.MonitoringPeriod = defaultMonitoringPeriod
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	o.Thresholds = slices.Clone(o.Thresholds)
	return &Manager{o: o, firstMet: map[int]time.Time{}, conditionSeen: map[v1.NodeConditionType]time.Time{}}, nil
}

// Run synchronizes every MonitoringPeriod until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	klog.InfoS("Eviction manager: starting", "thresholds", m.o.Thresholds, "period", m.o.MonitoringPeriod)
	for {
		wait := m.o.MonitoringPeriod
		if len(m.Synchronize(ctx)) > 0 {
			wait = settleAfterEviction
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Pressure reports the node's pressure conditions.
func (m *Manager) Pressure() (memory, disk, pid bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Contains(m.conditions, v1.NodeMemoryPressure),
		slices.Contains(m.conditions, v1.NodeDiskPressure),
		slices.Contains(m.conditions, v1.NodePIDPressure)
}

// Synchronize is one pass of the kubelet's synchronize: observe the
// signals, update the thresholds' and conditions' state, and relieve the
// most pressing actionable threshold (memory first), by node-level
// reclaim or else by evicting one pod. It returns the evicted pod, if any.
func (m *Manager) Synchronize(ctx context.Context) []*v1.Pod {
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	if len(m.o.Thresholds) == 0 {
		return nil
	}
	// The pods before the figures, as the kubelet: a pod admitted
	// meanwhile has no figures yet and would rank first.
	pods := m.o.ActivePods()
	s, err := m.o.Summary(ctx)
	if err != nil {
		klog.ErrorS(err, "Eviction manager: no stats summary")
		return nil
	}
	obs := Observe(s)
	act := m.advance(obs, m.o.Clock())
	if len(act) == 0 {
		klog.V(4).InfoS("Eviction manager: no resources are starved")
		return nil
	}
	t := m.o.Thresholds[act[0]]
	o := obs[t.Signal]
	res := resourceOf(t.Signal)
	klog.InfoS("Eviction manager: attempting to reclaim", "resource", res, "signal", t.Signal,
		"observed", quantity(res, o.Available), "threshold", thresholdQuantity(t, o))
	dedicated := dedicatedImageFs(s)
	if m.reclaimNodeLevel(ctx, t.Signal, dedicated) {
		klog.InfoS("Eviction manager: reduced the pressure without evicting pods", "resource", res)
		return nil
	}
	if len(pods) == 0 {
		klog.ErrorS(nil, "Eviction manager: thresholds are met but no pods are active to evict", "signal", t.Signal)
		return nil
	}
	stats := indexPods(s)
	pods = slices.Clone(pods)
	rank(pods, t.Signal, stats, dedicated)
	klog.V(2).InfoS("Eviction manager: pods ranked for eviction", "signal", t.Signal, "pods", klog.KObjSlice(pods))
	for _, pod := range pods {
		if ctx.Err() != nil {
			return nil
		}
		if IsCritical(pod) {
			klog.InfoS("Eviction manager: cannot evict a critical pod", "pod", klog.KObj(pod))
			continue
		}
		msg := evictionMessage(res, pod, stats[pod.UID], t, o)
		grace := m.gracePeriod(pod, t)
		klog.InfoS("Eviction manager: evicting pod", "pod", klog.KObj(pod), "signal", t.Signal,
			"observed", quantity(res, o.Available), "threshold", thresholdQuantity(t, o), "hard", t.Hard(), "gracePeriod", grace)
		if err := m.o.KillPod(ctx, pod, evictedStatus(pod, msg, m.o.Clock()), &grace); err != nil {
			klog.ErrorS(err, "Eviction manager: pod failed to evict", "pod", klog.KObj(pod))
			continue
		}
		klog.InfoS("Eviction manager: pod evicted", "pod", klog.KObj(pod))
		return []*v1.Pod{pod}
	}
	klog.InfoS("Eviction manager: unable to evict any pods from the node", "signal", t.Signal)
	return nil
}

// advance is the decide half of a pass: it moves the thresholds and
// conditions along their state machines (see the package comment) with
// obs taken at now, and returns the thresholds to act on, most pressing
// first: the ACTIONABLE ones whose figures changed since the last pass,
// memory before the others.
func (m *Manager) advance(obs Observations, now time.Time) []int {
	all := make([]int, len(m.o.Thresholds))
	for i := range all {
		all[i] = i
	}
	metNow := m.met(all, obs, false)
	for _, i := range m.met(m.actionable, obs, true) {
		if !slices.Contains(metNow, i) {
			metNow = append(metNow, i)
		}
	}
	slices.Sort(metNow)

	firstMet := map[int]time.Time{}
	var act []int
	for _, i := range metNow {
		at, ok := m.firstMet[i]
		if !ok {
			at = now
		}
		firstMet[i] = at
		t := m.o.Thresholds[i]
		m.conditionSeen[conditionOf(t.Signal)] = now
		if d := now.Sub(at); d < t.GracePeriod {
			klog.V(2).InfoS("Eviction manager: threshold met, grace period not over", "threshold", t, "for", d)
			continue
		}
		act = append(act, i)
	}
	var conds []v1.NodeConditionType
	for _, c := range []v1.NodeConditionType{v1.NodeMemoryPressure, v1.NodeDiskPressure, v1.NodePIDPressure} {
		at, ok := m.conditionSeen[c]
		if !ok {
			continue
		}
		if now.Sub(at) >= m.o.PressureTransitionPeriod {
			delete(m.conditionSeen, c)
			continue
		}
		conds = append(conds, c)
	}
	m.mu.Lock()
	if !slices.Equal(conds, m.conditions) {
		klog.InfoS("Eviction manager: node conditions changed", "conditions", conds, "was", m.conditions)
	}
	m.conditions = conds
	m.mu.Unlock()
	m.firstMet = firstMet
	m.actionable = act

	// Figures no newer than last time were acted on already: acting again
	// would evict a second pod for the first one's usage.
	var fresh []int
	for _, i := range act {
		sig := m.o.Thresholds[i].Signal
		o := obs[sig]
		if last, ok := m.last[sig]; ok && !o.Time.IsZero() && !o.Time.After(last.Time) {
			continue
		}
		fresh = append(fresh, i)
	}
	m.last = obs
	slices.SortStableFunc(fresh, func(a, b int) int {
		return cmpBool(resourceOf(m.o.Thresholds[a].Signal) == v1.ResourceMemory, resourceOf(m.o.Thresholds[b].Signal) == v1.ResourceMemory)
	})
	return fresh
}

// met returns the thresholds (indices) among idx that obs meets; a signal
// not observed meets none.
func (m *Manager) met(idx []int, obs Observations, withMinReclaim bool) []int {
	var out []int
	for _, i := range idx {
		t := m.o.Thresholds[i]
		o, ok := obs[t.Signal]
		if !ok {
			klog.V(4).InfoS("Eviction manager: no observation for signal", "signal", t.Signal)
			continue
		}
		if met(t, o, withMinReclaim) {
			out = append(out, i)
		}
	}
	return out
}

// reclaimNodeLevel frees what the node can without evicting pods, for a
// disk signal: dead containers, then unused images, on the filesystem
// they are on (nodefs holds neither when the imagefs is dedicated). It
// reports whether that resolved every threshold, minimum reclaims
// included.
func (m *Manager) reclaimNodeLevel(ctx context.Context, sig Signal, dedicatedImageFs bool) bool {
	if r := resourceOf(sig); r != v1.ResourceEphemeralStorage && r != resourceInodes {
		return false // memory and pids have no node-level reclaim
	}
	if dedicatedImageFs && (sig == SignalNodeFsAvailable || sig == SignalNodeFsInodesFree) {
		return false
	}
	ran := false
	for _, f := range []struct {
		what string
		fn   func(context.Context) error
	}{{"containers", m.o.ReclaimContainers}, {"images", m.o.ReclaimImages}} {
		if f.fn == nil {
			continue
		}
		ran = true
		if err := f.fn(ctx); err != nil {
			klog.InfoS("Eviction manager: node-level reclaim failed", "what", f.what, "signal", sig, "err", err)
		}
	}
	if !ran {
		return false
	}
	s, err := m.o.Summary(ctx)
	if err != nil {
		klog.ErrorS(err, "Eviction manager: no stats summary after node-level reclaim")
		return false
	}
	all := make([]int, len(m.o.Thresholds))
	for i := range all {
		all[i] = i
	}
	return len(m.met(all, Observe(s), true)) == 0
}

// gracePeriod is how long the evicted pod gets to stop: none for a hard
// threshold; for a soft one its own, capped by MaxPodGracePeriod.
func (m *Manager) gracePeriod(pod *v1.Pod, t Threshold) int64 {
	if t.Hard() {
		return 0
	}
	g := int64(v1.DefaultTerminationGracePeriodSeconds)
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		g = *pod.Spec.TerminationGracePeriodSeconds
	}
	if m.o.MaxPodGracePeriod > 0 && g > m.o.MaxPodGracePeriod {
		g = m.o.MaxPodGracePeriod
	}
	return g
}

// evictedStatus is pod's status once evicted: Failed, with the reason,
// the message, and the DisruptionTarget condition the kubelet adds.
func evictedStatus(pod *v1.Pod, msg string, now time.Time) v1.PodStatus {
	st := *pod.Status.DeepCopy()
	st.Phase = v1.PodFailed
	st.Reason = Reason
	st.Message = msg
	cond := v1.PodCondition{
		Type:               v1.DisruptionTarget,
		Status:             v1.ConditionTrue,
		Reason:             v1.PodReasonTerminationByKubelet,
		Message:            msg,
		LastTransitionTime: metav1.NewTime(now),
	}
	i := slices.IndexFunc(st.Conditions, func(c v1.PodCondition) bool { return c.Type == v1.DisruptionTarget })
	if i < 0 {
		st.Conditions = append(st.Conditions, cond)
	} else {
		st.Conditions[i] = cond
	}
	return st
}

// thresholdQuantity is t's amount for the observation, as printed.
func thresholdQuantity(t Threshold, o Observation) *resource.Quantity {
	if t.Value.Quantity != nil {
		q := t.Value.Quantity.DeepCopy()
		return &q
	}
	return quantity(resourceOf(t.Signal), t.Value.amount(o.Capacity))
}

// evictionMessage is the kubelet's: the starved resource, the threshold
// and what was left, and which containers used more than they requested
// (memory or ephemeral storage).
func evictionMessage(res v1.ResourceName, pod *v1.Pod, ps *statsapi.PodStats, t Threshold, o Observation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "The node was low on resource: %v. ", res)
	fmt.Fprintf(&b, "Threshold quantity: %v, available: %v. ", thresholdQuantity(t, o), quantity(res, o.Available))
	if ps == nil {
		return b.String()
	}
	if res == v1.ResourceMemory && pod.Spec.Resources != nil && ps.Memory != nil && ps.Memory.WorkingSetBytes != nil {
		if req, ok := pod.Spec.Resources.Requests[v1.ResourceMemory]; ok {
			fmt.Fprintf(&b, "Pod %s was using %s, request is %s, has larger consumption of %v. ",
				pod.Name, quantity(res, memoryUsage(ps)), req.String(), res)
		}
	}
	containers := append(slices.Clone(pod.Spec.Containers), pod.Spec.InitContainers...)
	for _, cs := range ps.Containers {
		i := slices.IndexFunc(containers, func(c v1.Container) bool { return c.Name == cs.Name })
		if i < 0 {
			continue // an ephemeral container: it has no requests to blame
		}
		req := containers[i].Resources.Requests[res]
		var usage *resource.Quantity
		switch res {
		case v1.ResourceMemory:
			if cs.Memory != nil && cs.Memory.WorkingSetBytes != nil {
				usage = quantity(res, int64(*cs.Memory.WorkingSetBytes))
			}
		case v1.ResourceEphemeralStorage:
			if cs.Rootfs != nil && cs.Rootfs.UsedBytes != nil && cs.Logs != nil && cs.Logs.UsedBytes != nil {
				usage = quantity(res, int64(*cs.Rootfs.UsedBytes+*cs.Logs.UsedBytes))
			}
		}
		if usage != nil && usage.Cmp(req) > 0 {
			fmt.Fprintf(&b, "Container %s was using %s, request is %s, has larger consumption of %v. ", cs.Name, usage, req.String(), res)
		}
	}
	return b.String()
}
