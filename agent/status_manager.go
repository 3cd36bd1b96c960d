package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/klog/v2"

	"peapod/agent/objects"
	"peapod/agent/podcgroups"
)

// statusManager writes the status of the node's pods to the API server, as
// the kubelet's status manager: a strategic-merge patch of the status
// subresource, only when it changed, with the pod's UID as precondition.
// It also keeps one mirror pod per static pod.
type statusManager struct {
	a *Agent

	mu sync.Mutex
	// sent is the status last written per pod UID (JSON), so an informer
	// that lags behind the patch does not cause the same patch again.
	sent map[types.UID]string
	// mirrorTried rate-limits mirror pod create/delete per namespace/name.
	mirrorTried map[string]time.Time
}

// statusPeriod is how often statuses are compared; the workers refresh
// theirs at the sync period (1 s by default).
const statusPeriod = time.Second

func newStatusManager(a *Agent) *statusManager {
	return &statusManager{a: a, sent: map[types.UID]string{}, mirrorTried: map[string]time.Time{}}
}

func (m *statusManager) run(ctx context.Context) {
	t := time.NewTicker(statusPeriod)
	defer t.Stop()
	for {
		m.syncOnce(ctx)
		m.syncMirrors(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *statusManager) forget(uid types.UID) {
	m.mu.Lock()
	delete(m.sent, uid)
	m.mu.Unlock()
}

type statusJob struct {
	api      *v1.Pod // the pod as the API server has it
	worker   *worker // its worker, or nil
	rejected *admitResult
}

func (m *statusManager) syncOnce(ctx context.Context) {
	a, cs := m.a, m.a.cluster
	var jobs []statusJob
	a.mu.Lock()
	for uid, p := range cs.pods {
		if r, ok := cs.rejected[uid]; ok {
			jobs = append(jobs, statusJob{api: p, rejected: &r})
			continue
		}
		if w := a.workers[uid]; w != nil && !cs.finished[uid] {
			jobs = append(jobs, statusJob{api: p, worker: w})
		}
	}
	a.mu.Unlock()
	for _, j := range jobs {
		if ctx.Err() != nil {
			return
		}
		var want v1.PodStatus
		if j.rejected != nil {
			want = *j.api.Status.DeepCopy()
			want.Phase, want.Reason, want.Message = v1.PodFailed, j.rejected.Reason, j.rejected.Message
			if want.QOSClass == "" {
				want.QOSClass = podcgroups.QOSClass(j.api)
			}
		} else {
			ours, known := j.worker.knownStatus()
			if !known {
				continue
			}
			want = mergeStatus(j.api, ours, a.clock.Now())
		}
		m.write(ctx, j.api, want)
	}
}

// ownedConditions are the pod conditions the node sets; the others
// (PodScheduled, DisruptionTarget, readiness gates) belong to others and
// are kept as the API server has them.
var ownedConditions = map[v1.PodConditionType]bool{
	v1.PodReadyToStartContainers: true, v1.PodInitialized: true, v1.PodReady: true, v1.ContainersReady: true,
}

// mergeStatus lays the worker's status over the API server's, keeping
// what the node does not own: the start time and QoS class once set, a
// terminal phase (a pod never leaves Succeeded or Failed), the conditions
// of others, and the transition time of a condition that did not change.
func mergeStatus(api *v1.Pod, ours v1.PodStatus, now time.Time) v1.PodStatus {
	out := *api.Status.DeepCopy()
	if !isTerminal(api) {
		out.Phase = ours.Phase
	}
	out.Message, out.Reason = ours.Message, ours.Reason
	out.HostIP, out.HostIPs = ours.HostIP, ours.HostIPs
	if len(ours.PodIPs) > 0 || !isTerminal(api) && ours.Phase != v1.PodSucceeded && ours.Phase != v1.PodFailed {
		out.PodIP, out.PodIPs = ours.PodIP, ours.PodIPs
	}
	if out.StartTime == nil {
		out.StartTime = ours.StartTime
	}
	if out.QOSClass == "" {
		out.QOSClass = ours.QOSClass
	}
	out.InitContainerStatuses = ours.InitContainerStatuses
	out.ContainerStatuses = ours.ContainerStatuses
	out.EphemeralContainerStatuses = ours.EphemeralContainerStatuses
	out.ObservedGeneration = api.Generation

	var conds []v1.PodCondition
	hasScheduled := false
	for _, c := range api.Status.Conditions {
		if !ownedConditions[c.Type] {
			conds = append(conds, c)
			hasScheduled = hasScheduled || c.Type == v1.PodScheduled
		}
	}
	for _, c := range ours.Conditions {
		if c.Type == v1.PodScheduled {
			// A pod bound by spec.nodeName never went through the
			// scheduler; the kubelet adds the condition then.
			if !hasScheduled {
				c.LastTransitionTime = metav1.NewTime(now)
				conds = append(conds, c)
			}
			continue
		}
		if c.Type == v1.DisruptionTarget {
			// The node's own disruption (eviction): added, unless one
			// already says the pod is being disrupted.
			if i := slices.IndexFunc(conds, func(x v1.PodCondition) bool { return x.Type == v1.DisruptionTarget }); i < 0 {
				conds = append(conds, c)
			} else if conds[i].Status != v1.ConditionTrue {
				conds[i] = c
			}
			continue
		}
		if !ownedConditions[c.Type] {
			continue
		}
		c.LastTransitionTime = metav1.NewTime(now)
		for _, old := range api.Status.Conditions {
			if old.Type == c.Type && old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		c.ObservedGeneration = api.Generation
		if c.Type == v1.PodReady && c.Status == v1.ConditionTrue {
			if reason, msg := readinessGatesUnmet(api); reason != "" {
				c.Status, c.Reason, c.Message = v1.ConditionFalse, reason, msg
				c.LastTransitionTime = metav1.NewTime(now)
				for _, old := range api.Status.Conditions {
					if old.Type == c.Type && old.Status == c.Status {
						c.LastTransitionTime = old.LastTransitionTime
					}
				}
			}
		}
		conds = append(conds, c)
	}
	out.Conditions = conds
	return out
}

// readinessGatesUnmet says why the pod's readiness gates keep it from
// Ready (their conditions are set by others, in the API server), in the
// kubelet's words; "" when they are all True.
func readinessGatesUnmet(api *v1.Pod) (reason, message string) {
	var msgs []string
	for _, g := range api.Spec.ReadinessGates {
		var found *v1.PodCondition
		for i := range api.Status.Conditions {
			if api.Status.Conditions[i].Type == g.ConditionType {
				found = &api.Status.Conditions[i]
			}
		}
		switch {
		case found == nil:
			msgs = append(msgs, fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", g.ConditionType))
		case found.Status != v1.ConditionTrue:
			msgs = append(msgs, fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %v", g.ConditionType, found.Status))
		}
	}
	if len(msgs) == 0 {
		return "", ""
	}
	return "ReadinessGatesNotReady", strings.Join(msgs, ", ")
}

// write patches pod's status to want when it differs from what the API
// server has and from what was sent last.
func (m *statusManager) write(ctx context.Context, pod *v1.Pod, want v1.PodStatus) {
	newJSON, err := json.Marshal(want)
	if err != nil {
		return
	}
	oldJSON, err := json.Marshal(pod.Status)
	if err != nil {
		return
	}
	if string(newJSON) == string(oldJSON) {
		return
	}
	m.mu.Lock()
	same := m.sent[pod.UID] == string(newJSON)
	m.mu.Unlock()
	if same {
		return
	}
	patch, err := statusPatch(pod.UID, pod.Status, want)
	if err != nil {
		klog.ErrorS(err, "Building the pod status patch failed", "pod", klog.KObj(pod))
		return
	}
	_, err = m.a.cluster.o.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	switch {
	case err == nil:
		m.mu.Lock()
		m.sent[pod.UID] = string(newJSON)
		m.mu.Unlock()
		klog.V(3).InfoS("Pod status written", "pod", klog.KObj(pod), "phase", want.Phase)
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		// Gone, or a new pod of the same name (the UID precondition):
		// the informer will tell.
		klog.V(2).InfoS("Pod status not written: the pod is gone", "pod", klog.KObj(pod), "podUID", pod.UID, "error", err)
	default:
		klog.ErrorS(err, "Writing pod status failed; will retry", "pod", klog.KObj(pod))
	}
}

// statusPatch is the kubelet's status patch: the two-way strategic merge
// patch from old to new status, with metadata.uid as a precondition.
func statusPatch(uid types.UID, old, new v1.PodStatus) ([]byte, error) {
	oldB, err := json.Marshal(v1.Pod{ObjectMeta: metav1.ObjectMeta{UID: uid}, Status: old})
	if err != nil {
		return nil, err
	}
	newB, err := json.Marshal(v1.Pod{ObjectMeta: metav1.ObjectMeta{UID: uid}, Status: new})
	if err != nil {
		return nil, err
	}
	p, err := strategicpatch.CreateTwoWayMergePatch(oldB, newB, v1.Pod{})
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", uid, err)
	}
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		return nil, err
	}
	m["metadata"] = map[string]any{"uid": string(uid)}
	return json.Marshal(m)
}

// syncMirrors keeps one mirror pod per static pod, with its status:
// created when missing, replaced when its static pod changed (another
// config hash) or someone deleted it, removed when its static pod is gone.
func (m *statusManager) syncMirrors(ctx context.Context) {
	a, cs := m.a, m.a.cluster
	node := cs.o.Node.Current()
	if node == nil {
		return
	}
	type staticJob struct {
		pod    *v1.Pod
		worker *worker
	}
	a.mu.Lock()
	statics := map[string]staticJob{}
	for _, p := range a.desired {
		statics[objects.Key(p.Namespace, p.Name)] = staticJob{p, a.workers[p.UID]}
	}
	mirrors := make(map[string]*v1.Pod, len(cs.mirrors))
	for k, p := range cs.mirrors {
		mirrors[k] = p
	}
	a.mu.Unlock()

	for key, s := range statics {
		mp := mirrors[key]
		switch {
		case mp == nil:
			m.mirrorAction(ctx, key, func() error { return m.createMirror(ctx, s.pod, node) })
		case mp.Annotations[annotationConfigMirror] != string(s.pod.UID) || mp.DeletionTimestamp != nil:
			m.mirrorAction(ctx, key, func() error { return m.deleteMirror(ctx, mp) })
		case s.worker != nil:
			if ours, known := s.worker.knownStatus(); known {
				m.write(ctx, mp, mergeStatus(mp, ours, a.clock.Now()))
			}
		}
	}
	for key, mp := range mirrors {
		if _, ok := statics[key]; !ok {
			m.mirrorAction(ctx, key, func() error { return m.deleteMirror(ctx, mp) })
		}
	}
}

// mirrorAction runs fn at most every 5 s per mirror: the informer needs a
// moment to show the result, and a refused create must not spin.
func (m *statusManager) mirrorAction(_ context.Context, key string, fn func() error) {
	m.mu.Lock()
	if t, ok := m.mirrorTried[key]; ok && m.a.clock.Now().Sub(t) < 5*time.Second {
		m.mu.Unlock()
		return
	}
	m.mirrorTried[key] = m.a.clock.Now()
	m.mu.Unlock()
	if err := fn(); err != nil {
		klog.ErrorS(err, "Mirror pod update failed; will retry", "pod", key)
	}
}

func (m *statusManager) createMirror(ctx context.Context, static *v1.Pod, node *v1.Node) error {
	mp := &v1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: static.Name, Namespace: static.Namespace,
		Labels:      static.Labels,
		Annotations: map[string]string{},
	}, Spec: *static.Spec.DeepCopy()}
	for k, v := range static.Annotations {
		mp.Annotations[k] = v
	}
	mp.Annotations[annotationConfigMirror] = string(static.UID)
	mp.Spec.NodeName = node.Name
	// The kubelet makes its Node the owner, so that the mirror pods of a
	// deleted node are collected (and NodeRestriction requires it).
	yes := true
	mp.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID, Controller: &yes}}
	_, err := m.a.cluster.o.Client.CoreV1().Pods(mp.Namespace).Create(ctx, mp, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create mirror pod %s/%s: %w", mp.Namespace, mp.Name, err)
	}
	klog.InfoS("Mirror pod created", "pod", klog.KObj(mp), "staticPodUID", static.UID)
	return nil
}

func (m *statusManager) deleteMirror(ctx context.Context, mp *v1.Pod) error {
	zero := int64(0)
	uid := mp.UID
	err := m.a.cluster.o.Client.CoreV1().Pods(mp.Namespace).Delete(ctx, mp.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete mirror pod %s/%s: %w", mp.Namespace, mp.Name, err)
	}
	klog.InfoS("Mirror pod deleted", "pod", klog.KObj(mp))
	return nil
}
