package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/klog/v2"
)

// Online volume expansion in node mode, the kubelet volume manager's part
// (operationexecutor.NodeExpander): the external-resizer grows the disk
// (ControllerExpandVolume), sets the PV's capacity and marks the claim
// allocatedResourceStatuses[storage] = NodeResizePending; the node then
// marks it NodeResizeInProgress, grows the filesystem where the volume is
// mounted (NodeExpandVolume, volumes.Manager.ExpandVolume) and writes the
// claim's status.capacity, dropping the resize status and conditions.
//
// The node cannot watch claims (the Node authorizer allows a get of the
// claims its pods use, no list), so the claims of the running pods are
// read every expandPeriod, as the kubelet reads them again on each pass of
// its populator.

const expandPeriod = 5 * time.Second

// expandJob is one PVC volume of a running pod.
type expandJob struct {
	pod    *v1.Pod
	volume string
	claim  string
}

func (a *Agent) runExpansion(ctx context.Context) {
	exp, ok := a.o.Volumes.(VolumeExpander)
	if !ok {
		return
	}
	t := time.NewTicker(expandPeriod)
	defer t.Stop()
	// reported holds the last failure reported per pod volume, so a
	// failure backing off is reported once, not at every pass.
	reported := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, j := range a.expandJobs() {
			if ctx.Err() != nil {
				return
			}
			a.expandOnce(ctx, exp, j, reported)
		}
	}
}

// expandJobs are the PVC volumes of the admitted, running (not deleted)
// pods of the API server.
func (a *Agent) expandJobs() []expandJob {
	cs := a.cluster
	var jobs []expandJob
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid, p := range cs.pods {
		if p.DeletionTimestamp != nil || cs.finished[uid] || a.workers[uid] == nil {
			continue
		}
		if _, rejected := cs.rejected[uid]; rejected {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if c := v.PersistentVolumeClaim; c != nil {
				jobs = append(jobs, expandJob{pod: p, volume: v.Name, claim: c.ClaimName})
			}
		}
	}
	return jobs
}

// nodeExpansionPending says whether claim waits for the node to grow its
// filesystem: its resize status is NodeResizePending (or InProgress: a
// node that died mid-way tries again), or, from a resizer that predates
// allocatedResourceStatuses, it carries the FileSystemResizePending
// condition.
func nodeExpansionPending(pvc *v1.PersistentVolumeClaim) bool {
	switch pvc.Status.AllocatedResourceStatuses[v1.ResourceStorage] {
	case v1.PersistentVolumeClaimNodeResizePending, v1.PersistentVolumeClaimNodeResizeInProgress:
		return true
	case "":
		for _, c := range pvc.Status.Conditions {
			if c.Type == v1.PersistentVolumeClaimFileSystemResizePending && c.Status == v1.ConditionTrue {
				return true
			}
		}
	}
	return false
}

// expansionInProgress is claim's status marked NodeResizeInProgress.
func expansionInProgress(pvc *v1.PersistentVolumeClaim) *v1.PersistentVolumeClaim {
	n := pvc.DeepCopy()
	if n.Status.AllocatedResourceStatuses == nil {
		n.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{}
	}
	n.Status.AllocatedResourceStatuses[v1.ResourceStorage] = v1.PersistentVolumeClaimNodeResizeInProgress
	return n
}

// expansionFinished is claim's status once the node grew it to size: the
// capacity is the new size, the storage resize status and every resize
// condition are gone (the kubelet's MarkNodeExpansionFinishedWithRecovery).
func expansionFinished(pvc *v1.PersistentVolumeClaim, size resource.Quantity) *v1.PersistentVolumeClaim {
	n := pvc.DeepCopy()
	if n.Status.Capacity == nil {
		n.Status.Capacity = v1.ResourceList{}
	}
	n.Status.Capacity[v1.ResourceStorage] = size
	delete(n.Status.AllocatedResourceStatuses, v1.ResourceStorage)
	if len(n.Status.AllocatedResourceStatuses) == 0 {
		n.Status.AllocatedResourceStatuses = nil
	}
	var conds []v1.PersistentVolumeClaimCondition
	for _, c := range n.Status.Conditions {
		if !resizeCondition[c.Type] {
			conds = append(conds, c)
		}
	}
	n.Status.Conditions = conds
	return n
}

// expansionFailed is claim's status with a NodeResizeError condition
// saying why (kept until a later expansion finishes); an infeasible size
// also sets the resize status NodeResizeInfeasible, which ends the node's
// retries and hands the claim back to the resizer (the kubelet's
// MarkNodeExpansionInfeasible).
func expansionFailed(pvc *v1.PersistentVolumeClaim, err error, infeasible bool, now time.Time) *v1.PersistentVolumeClaim {
	n := pvc.DeepCopy()
	if infeasible {
		if n.Status.AllocatedResourceStatuses == nil {
			n.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{}
		}
		n.Status.AllocatedResourceStatuses[v1.ResourceStorage] = v1.PersistentVolumeClaimNodeResizeInfeasible
	}
	cond := v1.PersistentVolumeClaimCondition{
		Type: v1.PersistentVolumeClaimNodeResizeError, Status: v1.ConditionTrue,
		LastTransitionTime: metav1.NewTime(now), Message: "failed to expand pvc with " + err.Error(),
	}
	for i, c := range n.Status.Conditions {
		if c.Type == cond.Type {
			if c.Message == cond.Message {
				return n
			}
			n.Status.Conditions[i] = cond
			return n
		}
	}
	n.Status.Conditions = append(n.Status.Conditions, cond)
	return n
}

var resizeCondition = map[v1.PersistentVolumeClaimConditionType]bool{
	v1.PersistentVolumeClaimResizing: true, v1.PersistentVolumeClaimFileSystemResizePending: true,
	v1.PersistentVolumeClaimControllerResizeError: true, v1.PersistentVolumeClaimNodeResizeError: true,
}

// patchClaimStatus writes claim's status from old to new as a two-way
// strategic merge patch of the status subresource, with old's
// resourceVersion as a precondition (the kubelet's PatchPVCStatus): a
// claim that changed meanwhile is read again at the next pass.
func (a *Agent) patchClaimStatus(ctx context.Context, old, new *v1.PersistentVolumeClaim) (*v1.PersistentVolumeClaim, error) {
	oldJSON, err := json.Marshal(old)
	if err != nil {
		return nil, err
	}
	newJSON, err := json.Marshal(new)
	if err != nil {
		return nil, err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, old)
	if err != nil {
		return nil, fmt.Errorf("persistentvolumeclaim %s/%s: status patch: %w", old.Namespace, old.Name, err)
	}
	var m map[string]any
	if err := json.Unmarshal(patch, &m); err != nil {
		return nil, err
	}
	meta, _ := m["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["resourceVersion"] = old.ResourceVersion
	m["metadata"] = meta
	if patch, err = json.Marshal(m); err != nil {
		return nil, err
	}
	out, err := a.cluster.o.Client.CoreV1().PersistentVolumeClaims(old.Namespace).Patch(ctx, old.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return nil, fmt.Errorf("persistentvolumeclaim %s/%s: status patch: %w", old.Namespace, old.Name, err)
	}
	return out, nil
}

// expandOnce does one pass for one pod volume.
func (a *Agent) expandOnce(ctx context.Context, exp VolumeExpander, j expandJob, reported map[string]string) {
	client := a.cluster.o.Client
	key := string(j.pod.UID) + "/" + j.volume
	pvc, err := client.CoreV1().PersistentVolumeClaims(j.pod.Namespace).Get(ctx, j.claim, metav1.GetOptions{})
	if err != nil {
		klog.V(4).InfoS("Reading the claim for expansion failed", "pod", klog.KObj(j.pod), "claim", j.claim, "err", err)
		return
	}
	if pvc.Spec.VolumeName == "" || !nodeExpansionPending(pvc) {
		delete(reported, key)
		return
	}
	pv, err := client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		klog.V(2).InfoS("Reading the volume for expansion failed", "pod", klog.KObj(j.pod), "pv", pvc.Spec.VolumeName, "err", err)
		return
	}
	size, ok := pv.Spec.Capacity[v1.ResourceStorage]
	if !ok || size.Sign() <= 0 {
		return
	}
	if pvc.Status.AllocatedResourceStatuses[v1.ResourceStorage] != v1.PersistentVolumeClaimNodeResizeInProgress {
		if pvc, err = a.patchClaimStatus(ctx, pvc, expansionInProgress(pvc)); err != nil {
			klog.ErrorS(err, "Marking the claim's node expansion in progress failed", "pod", klog.KObj(j.pod))
			return
		}
	}
	called, err := exp.ExpandVolume(ctx, j.pod.UID, j.volume, size.Value())
	var notMounted interface{ NotMounted() bool }
	var backingOff interface{ BackingOff() bool }
	var final interface {
		Final() bool
		Infeasible() bool
	}
	switch {
	case err == nil:
	case errors.As(err, &notMounted) && notMounted.NotMounted():
		return // mounted later, or gone: the next pass sees
	case errors.As(err, &backingOff) && backingOff.BackingOff():
		return
	default:
		msg := err.Error()
		if reported[key] != msg {
			reported[key] = msg
			a.event(j.pod, v1.EventTypeWarning, "VolumeResizeFailed", "MountVolume.NodeExpandVolume failed for volume %q : %s", pv.Name, msg)
			if errors.As(err, &final) && final.Final() {
				if _, perr := a.patchClaimStatus(ctx, pvc, expansionFailed(pvc, err, final.Infeasible(), a.clock.Now())); perr != nil {
					klog.ErrorS(perr, "Marking the claim's node expansion failed", "pod", klog.KObj(j.pod))
				}
			}
		}
		klog.ErrorS(err, "Node expansion failed; retrying with back-off", "pod", klog.KObj(j.pod), "volume", j.volume, "pv", pv.Name)
		return
	}
	if _, err := a.patchClaimStatus(ctx, pvc, expansionFinished(pvc, size)); err != nil {
		klog.ErrorS(err, "Writing the expanded claim's capacity failed; retrying", "pod", klog.KObj(j.pod), "claim", j.claim)
		return
	}
	delete(reported, key)
	if called {
		msg := fmt.Sprintf("MountVolume.NodeExpandVolume succeeded for volume %q %s", pv.Name, a.o.NodeName)
		a.event(j.pod, v1.EventTypeNormal, "FileSystemResizeSuccessful", "%s", msg)
		if cs := a.cluster; cs.recorder != nil {
			cs.recorder.Eventf(pvc, v1.EventTypeNormal, "FileSystemResizeSuccessful", "%s", msg)
		}
	}
	klog.InfoS("Claim expanded on the node", "pod", klog.KObj(j.pod), "claim", j.claim, "pv", pv.Name, "size", size.String(), "nodeExpandVolume", called)
}
