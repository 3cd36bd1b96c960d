package eviction

import (
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// Reason is the pod status reason of an evicted pod, and of a pod the node
// refused under pressure (the kubelet's eviction.Reason).
const Reason = "Evicted"

// The kubelet's markers of pods not from the API server (kubetypes).
const (
	annotationConfigSource = "kubernetes.io/config.source"
	annotationConfigMirror = "kubernetes.io/config.mirror"
	sourceAPIServer        = "api"
	// systemCriticalPriority is scheduling.SystemCriticalPriority, the
	// priority of system-cluster-critical (system-node-critical is above).
	systemCriticalPriority = 2_000_000_000
)

// IsCritical is the kubelet's IsCriticalPod: a static pod (its config
// source is not the API server), a mirror pod, or a pod of priority
// system-cluster-critical or higher. The node never evicts such a pod for
// pressure and admits it under pressure: a static pod is not re-admitted
// once evicted, and the system pods are what keeps the node working.
func IsCritical(pod *v1.Pod) bool {
	if src, ok := pod.Annotations[annotationConfigSource]; ok && src != sourceAPIServer {
		return true
	}
	if _, ok := pod.Annotations[annotationConfigMirror]; ok {
		return true
	}
	return pod.Spec.Priority != nil && *pod.Spec.Priority >= systemCriticalPriority
}

// Admit is the kubelet's eviction admission: with no pressure every pod is
// admitted; under memory pressure alone, all but BestEffort pods that do
// not tolerate the memory-pressure taint; under disk or pid pressure only
// critical pods. reason and message are for the rejected pod's status.
func (m *Manager) Admit(pod *v1.Pod) (admit bool, reason, message string) {
	m.mu.RLock()
	conds := slices.Clone(m.conditions)
	m.mu.RUnlock()
	if len(conds) == 0 || IsCritical(pod) {
		return true, "", ""
	}
	if len(conds) == 1 && conds[0] == v1.NodeMemoryPressure {
		if !isBestEffort(pod) || toleratesMemoryPressure(pod) {
			return true, "", ""
		}
	}
	message = fmt.Sprintf("The node had condition: %v. ", conds)
	klog.InfoS("Eviction manager: refusing a pod under node pressure", "pod", klog.KObj(pod), "conditions", conds)
	return false, Reason, message
}

// toleratesMemoryPressure reports whether the pod tolerates the taint the
// node controller puts on a node under memory pressure.
func toleratesMemoryPressure(pod *v1.Pod) bool {
	taint := &v1.Taint{Key: v1.TaintNodeMemoryPressure, Effect: v1.TaintEffectNoSchedule}
	for i := range pod.Spec.Tolerations {
		if pod.Spec.Tolerations[i].ToleratesTaint(klog.Background(), taint, false) {
			return true
		}
	}
	return false
}

// isBestEffort reports whether the pod is of QoS class BestEffort: nothing
// requests or limits CPU or memory, neither a container nor the pod.
func isBestEffort(pod *v1.Pod) bool {
	if pod.Status.QOSClass != "" {
		return pod.Status.QOSClass == v1.PodQOSBestEffort
	}
	set := func(l v1.ResourceList) bool {
		for _, r := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory} {
			if q, ok := l[r]; ok && !q.IsZero() {
				return true
			}
		}
		return false
	}
	if r := pod.Spec.Resources; r != nil && (set(r.Requests) || set(r.Limits)) {
		return false
	}
	for _, cs := range [][]v1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if set(c.Resources.Requests) || set(c.Resources.Limits) {
				return false
			}
		}
	}
	return true
}
