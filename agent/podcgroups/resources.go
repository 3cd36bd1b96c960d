package podcgroups

import (
	v1 "k8s.io/api/core/v1"
)

// The kubelet's CPU conversions (pkg/kubelet/cm/helpers_linux.go).
const (
	minShares     = 2
	maxShares     = 262144
	sharesPerCPU  = 1024
	milliPerCPU   = 1000
	quotaPeriodUS = 100000 // 100ms, the CFS default the kubelet uses
	minQuotaUS    = 1000
)

// MilliCPUToShares is the cpu.shares of a CPU request in millicores.
func MilliCPUToShares(milli int64) uint64 {
	if milli == 0 {
		return minShares
	}
	s := milli * sharesPerCPU / milliPerCPU
	return uint64(min(max(s, minShares), maxShares))
}

func milliCPUToQuota(milli int64) int64 {
	if milli == 0 {
		return 0
	}
	return max(milli*quotaPeriodUS/milliPerCPU, minQuotaUS)
}

// Resources is what a cgroup gets: zero values are "no limit".
type Resources struct {
	CPUShares   uint64 // 0: leave as created
	CPUQuotaUS  int64  // 0: no quota (-1 is written)
	MemoryLimit int64  // bytes; 0: no limit
	PidsLimit   int64  // 0: no limit
}

// podResources is the kubelet's ResourceConfigForPod: shares from the
// pod's CPU requests, a CFS quota only when every container has a CPU
// limit, a memory limit only when every container has one; BestEffort
// pods get the minimum shares and no limits.
func podResources(pod *v1.Pod, pidsLimit int64) Resources {
	reqs, lims, cpuLimited, memLimited := podRequestsAndLimits(pod)
	cpuReq, cpuLim, memLim := reqs[v1.ResourceCPU], lims[v1.ResourceCPU], lims[v1.ResourceMemory]
	r := Resources{PidsLimit: max(pidsLimit, 0)}
	if QOSClass(pod) == v1.PodQOSBestEffort {
		r.CPUShares = minShares
		return r
	}
	r.CPUShares = MilliCPUToShares(cpuReq.MilliValue())
	if cpuLimited {
		r.CPUQuotaUS = milliCPUToQuota(cpuLim.MilliValue())
	}
	if memLimited {
		r.MemoryLimit = memLim.Value()
	}
	return r
}

// podRequestsAndLimits sums the pod's CPU and memory the way the
// scheduler and kubelet do (resourcehelper.PodRequests): app containers
// and restartable init containers (sidecars) add up, each ordinary init
// container counts alone with the sidecars started before it, the larger
// wins, and the pod overhead is added. Pod-level resources, when given,
// replace the sums. cpuLimited / memLimited say whether every container
// declares that limit (else the pod gets none).
func podRequestsAndLimits(pod *v1.Pod) (reqs, lims v1.ResourceList, cpuLimited, memLimited bool) {
	cpuLimited, memLimited = true, true
	note := func(c *v1.Container) {
		if q, ok := c.Resources.Limits[v1.ResourceCPU]; !ok || q.IsZero() {
			cpuLimited = false
		}
		if q, ok := c.Resources.Limits[v1.ResourceMemory]; !ok || q.IsZero() {
			memLimited = false
		}
	}
	sum := func(get func(*v1.Container) v1.ResourceList) v1.ResourceList {
		total := v1.ResourceList{}
		for i := range pod.Spec.Containers {
			addTo(total, get(&pod.Spec.Containers[i]))
		}
		sidecars := v1.ResourceList{}
		for i := range pod.Spec.InitContainers {
			c := &pod.Spec.InitContainers[i]
			if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
				addTo(total, get(c))
				addTo(sidecars, get(c))
				continue
			}
			alone := v1.ResourceList{}
			addTo(alone, get(c))
			addTo(alone, sidecars)
			for n, q := range alone {
				if cur, ok := total[n]; !ok || q.Cmp(cur) > 0 {
					total[n] = q.DeepCopy()
				}
			}
		}
		addTo(total, pod.Spec.Overhead)
		return total
	}
	for i := range pod.Spec.Containers {
		note(&pod.Spec.Containers[i])
	}
	for i := range pod.Spec.InitContainers {
		note(&pod.Spec.InitContainers[i])
	}
	reqs = sum(func(c *v1.Container) v1.ResourceList { return requestsOf(c) })
	lims = sum(func(c *v1.Container) v1.ResourceList { return c.Resources.Limits })
	if pr := pod.Spec.Resources; pr != nil {
		for _, n := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory} {
			if q, ok := pr.Requests[n]; ok {
				reqs[n] = q.DeepCopy()
			} else if q, ok := pr.Limits[n]; ok {
				reqs[n] = q.DeepCopy() // defaulted as for containers
			}
			if q, ok := pr.Limits[n]; ok {
				lims[n] = q.DeepCopy()
				if n == v1.ResourceCPU {
					cpuLimited = true
				} else {
					memLimited = true
				}
			}
		}
	}
	return reqs, lims, cpuLimited, memLimited
}

// requestsOf is a container's requests, a missing request defaulting to
// its limit as the API server's defaulting does (static pods from files
// may not have been defaulted).
func requestsOf(c *v1.Container) v1.ResourceList {
	out := v1.ResourceList{}
	for n, q := range c.Resources.Limits {
		out[n] = q
	}
	for n, q := range c.Resources.Requests {
		out[n] = q
	}
	return out
}

func addTo(total, add v1.ResourceList) {
	for n, q := range add {
		if n != v1.ResourceCPU && n != v1.ResourceMemory {
			continue
		}
		cur := total[n]
		cur.Add(q)
		total[n] = cur
	}
}

// QOSClass is the pod's QoS class as the API server computes it
// (qos.GetPodQOS): BestEffort without any CPU or memory request or limit,
// Guaranteed when every container's CPU and memory limits equal its
// requests, Burstable otherwise. A status that already names the class
// wins: it was set when the pod was admitted and never changes.
func QOSClass(pod *v1.Pod) v1.PodQOSClass {
	if c := pod.Status.QOSClass; c != "" {
		return c
	}
	any := false
	guaranteed := true
	check := func(c *v1.Container) {
		reqs := requestsOf(c)
		for _, n := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory} {
			r, hasReq := reqs[n]
			l, hasLim := c.Resources.Limits[n]
			if hasReq && !r.IsZero() || hasLim && !l.IsZero() {
				any = true
			}
			if !hasLim || l.IsZero() || !hasReq || r.Cmp(l) != 0 {
				guaranteed = false
			}
		}
	}
	for i := range pod.Spec.InitContainers {
		check(&pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		check(&pod.Spec.Containers[i])
	}
	if pr := pod.Spec.Resources; pr != nil {
		// Pod-level resources decide alone when set (KEP 2837).
		any, guaranteed = false, true
		for _, n := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory} {
			r, hasReq := pr.Requests[n]
			l, hasLim := pr.Limits[n]
			if hasReq && !r.IsZero() || hasLim && !l.IsZero() {
				any = true
			}
			if !hasLim || (hasReq && r.Cmp(l) != 0) {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return v1.PodQOSBestEffort
	case guaranteed:
		return v1.PodQOSGuaranteed
	}
	return v1.PodQOSBurstable
}

// cpuRequestMilli is the pod's total CPU request in millicores.
func cpuRequestMilli(pod *v1.Pod) int64 {
	reqs, _, _, _ := podRequestsAndLimits(pod)
	q := reqs[v1.ResourceCPU]
	return q.MilliValue()
}
