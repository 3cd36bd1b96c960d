package eviction

import (
	"cmp"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	resourcehelper "k8s.io/component-helpers/resource"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// The order pods are evicted in, the kubelet's (helpers.go rank*Pressure):
//
//	memory:       usage above requests first, then lower priority, then
//	              more usage above requests
//	nodefs/imagefs: the same with the pod's disk usage and its
//	              ephemeral-storage requests (inodes: no requests)
//	pids:         lower priority, then more processes
//
// A pod the summary has no figures for goes first at each usage step, as
// the kubelet's: nothing says it is not the one using the resource.

// podStats finds a pod's figures by UID.
type podStats map[types.UID]*statsapi.PodStats

func indexPods(s *statsapi.Summary) podStats {
	out := podStats{}
	if s == nil {
		return out
	}
	for i := range s.Pods {
		out[types.UID(s.Pods[i].PodRef.UID)] = &s.Pods[i]
	}
	return out
}

// fsParts says which of a pod's figures count towards a filesystem.
type fsParts struct{ rootfs, logs, volumes bool }

// diskParts is what the kubelet measures for a disk signal: with a
// dedicated imagefs, nodefs holds the logs and local volumes and imagefs
// the writable layers; on one filesystem, all of them.
func diskParts(sig Signal, dedicatedImageFs bool) fsParts {
	switch {
	case !dedicatedImageFs:
		return fsParts{rootfs: true, logs: true, volumes: true}
	case sig == SignalImageFsAvailable || sig == SignalImageFsInodesFree:
		return fsParts{rootfs: true}
	default:
		return fsParts{logs: true, volumes: true}
	}
}

// candidate is a pod with the figures it is ranked by.
type candidate struct {
	pod      *v1.Pod
	found    bool  // the summary has the pod
	usage    int64 // of the starved resource
	request  int64 // of the starved resource
	priority int32
}

// rank orders pods for eviction to relieve sig, the first to go first.
func rank(pods []*v1.Pod, sig Signal, stats podStats, dedicatedImageFs bool) {
	res := resourceOf(sig)
	cs := make([]candidate, len(pods))
	for i, p := range pods {
		c := candidate{pod: p, priority: corev1helpers.PodPriority(p)}
		ps, ok := stats[p.UID]
		if ok {
			c.found = true
			switch res {
			case v1.ResourceMemory:
				c.usage = memoryUsage(ps)
			case resourcePIDs:
				c.usage = processUsage(ps)
			default:
				c.usage = podDiskUsage(ps, p, diskParts(sig, dedicatedImageFs), res == resourceInodes)
			}
		}
		// Nobody requests inodes or pids: their request stays 0.
		if res == v1.ResourceMemory || res == v1.ResourceEphemeralStorage {
			c.request = podRequest(p, res)
		}
		cs[i] = c
	}
	if res == resourcePIDs {
		slices.SortStableFunc(cs, func(a, b candidate) int {
			return cmp.Or(cmp.Compare(a.priority, b.priority), byUsage(a, b, func(c candidate) int64 { return c.usage }))
		})
	} else {
		slices.SortStableFunc(cs, func(a, b candidate) int {
			return cmp.Or(
				cmp.Compare(exceedClass(a), exceedClass(b)),
				cmp.Compare(a.priority, b.priority),
				byUsage(a, b, func(c candidate) int64 { return c.usage - c.request }),
			)
		})
	}
	for i := range cs {
		pods[i] = cs[i].pod
	}
}

// exceedClass sorts pods without figures first, then those using more
// than they requested.
func exceedClass(c candidate) int {
	switch {
	case !c.found:
		return 0
	case c.usage > c.request:
		return 1
	}
	return 2
}

// byUsage puts pods without figures first, then the larger of v first.
func byUsage(a, b candidate, v func(candidate) int64) int {
	if !a.found || !b.found {
		return cmpBool(!a.found, !b.found)
	}
	return cmp.Compare(v(b), v(a))
}

// cmpBool puts true before false.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

func memoryUsage(ps *statsapi.PodStats) int64 {
	if ps.Memory == nil || ps.Memory.WorkingSetBytes == nil {
		return 0
	}
	return int64(*ps.Memory.WorkingSetBytes)
}

func processUsage(ps *statsapi.PodStats) int64 {
	if ps.ProcessStats == nil || ps.ProcessStats.ProcessCount == nil {
		return 0
	}
	return int64(*ps.ProcessStats.ProcessCount)
}

// podDiskUsage is the pod's bytes (or inodes) on a filesystem: its
// containers' writable layers and logs and its local volumes, as the
// kubelet's podDiskUsage. When the runtime gave no per-container or
// volume figures, the pod's ephemeral-storage total stands in for the
// whole (it is the same sum, taken by the stats provider).
func podDiskUsage(ps *statsapi.PodStats, pod *v1.Pod, parts fsParts, inodes bool) int64 {
	var sum int64
	seen := false
	add := func(fs *statsapi.FsStats) {
		if fs == nil {
			return
		}
		v := fs.UsedBytes
		if inodes {
			v = fs.InodesUsed
		}
		if v != nil {
			sum += int64(*v)
			seen = true
		}
	}
	for _, c := range ps.Containers {
		if parts.rootfs {
			add(c.Rootfs)
		}
		if parts.logs {
			add(c.Logs)
		}
	}
	if parts.volumes {
		local := localVolumes(pod)
		for i := range ps.VolumeStats {
			if local[ps.VolumeStats[i].Name] {
				add(&ps.VolumeStats[i].FsStats)
			}
		}
	}
	if !seen && parts.rootfs && parts.logs && parts.volumes {
		add(ps.EphemeralStorage)
	}
	return sum
}

// localVolumes are the pod's volumes on the node's disk, the kubelet's
// localVolumeNames: hostPath, and the local ephemeral ones (emptyDir not
// in memory, configMap, gitRepo).
func localVolumes(pod *v1.Pod) map[string]bool {
	out := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil || v.GitRepo != nil || v.ConfigMap != nil ||
			(v.EmptyDir != nil && v.EmptyDir.Medium == v1.StorageMediumDefault) {
			out[v.Name] = true
		}
	}
	return out
}

// podRequest is the pod's request of r, as the kubelet's
// GetResourceRequestQuantity: the containers' sum (or the largest init
// container's, sidecars counted), or the pod-level request when set, plus
// the pod's overhead if anything is requested.
func podRequest(pod *v1.Pod, r v1.ResourceName) int64 {
	q, ok := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{ExcludeOverhead: true})[r]
	if !ok || q.IsZero() {
		return 0
	}
	if o, ok := pod.Spec.Overhead[r]; ok {
		q.Add(o)
	}
	return q.Value()
}
