package agent

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// ActivePods are the pods whose containers may run: not finished, not
// failed by the node, not being removed. The eviction manager ranks
// them.
func (a *Agent) ActivePods() []*v1.Pod {
	a.mu.Lock()
	workers := make([]*worker, 0, len(a.workers))
	for uid, w := range a.workers {
		if !a.removing[uid] {
			workers = append(workers, w)
		}
	}
	a.mu.Unlock()
	var out []*v1.Pod
	for _, w := range workers {
		w.mu.Lock()
		done := w.failure != nil || w.status.Phase == v1.PodSucceeded || w.status.Phase == v1.PodFailed
		pod := w.pod
		if w.pendingPod != nil {
			pod = w.pendingPod
		}
		w.mu.Unlock()
		if !done {
			out = append(out, pod)
		}
	}
	return out
}

// EvictPod makes pod Failed with status's reason and message (and its
// DisruptionTarget condition), stops its containers within grace (nil:
// the pod's own) and releases its volumes and cgroup, as the kubelet's
// eviction manager has its pod worker do. It returns once that is done or
// ctx ends. The pod stays, Failed, until it is deleted.
func (a *Agent) EvictPod(ctx context.Context, pod *v1.Pod, status v1.PodStatus, grace *int64) error {
	a.mu.Lock()
	w := a.workers[pod.UID]
	a.mu.Unlock()
	if w == nil {
		return fmt.Errorf("pod %s (%s): no worker runs it here", klog.KObj(pod), pod.UID)
	}
	var conds []v1.PodCondition
	for _, c := range status.Conditions {
		if c.Type == v1.DisruptionTarget {
			conds = append(conds, c)
		}
	}
	f := w.fail(&podFailure{reason: status.Reason, message: status.Message, conditions: conds, grace: grace})
	if f.reason == status.Reason && f.message == status.Message {
		klog.InfoS("Evicting pod", "pod", klog.KObj(pod), "podUID", pod.UID, "message", status.Message)
		a.event(pod, v1.EventTypeWarning, status.Reason, "%s", status.Message)
	}
	// The pod is Failed and stopping whatever happens next: a stop that
	// takes longer than its grace period and a margin is logged, not
	// reported as a failure, or the eviction manager would evict one more
	// pod for the same pressure (the kubelet counts it as evicted too).
	wait := evictWaitMargin
	if grace != nil {
		wait += time.Duration(*grace) * time.Second
	} else {
		wait += time.Duration(gracePeriod(pod)) * time.Second
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-f.stopped:
		return nil
	case <-t.C:
		klog.InfoS("Evicted pod still stopping", "pod", klog.KObj(pod), "waited", wait)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("evict pod %s: %w", klog.KObj(pod), ctx.Err())
	}
}

// evictWaitMargin is how long past its grace period EvictPod waits for a
// pod to stop and release its volumes and cgroup.
const evictWaitMargin = 30 * time.Second
