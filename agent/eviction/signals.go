package eviction

import (
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Observation is one signal's reading: what is left of what there is.
type Observation struct {
	Available int64
	Capacity  int64
	// Time is when the figures were taken (zero when the summary did not
	// say).
	Time time.Time
}

// Observations are the readings of one summary, by signal; a signal whose
// figures the summary lacks is absent, and its thresholds cannot be met.
type Observations map[Signal]Observation

// Observe reads the signals from a stats summary, as the kubelet's
// makeSignalObservations: memory from the node's available bytes and
// working set, allocatable memory from the "pods" system container,
// nodefs from node.fs, imagefs from node.runtime.imageFs, pids from
// node.rlimit. Without an imagefs in the summary the images live on the
// node's filesystem, so imagefs reads as nodefs.
func Observe(s *statsapi.Summary) Observations {
	obs := Observations{}
	if s == nil {
		return obs
	}
	n := s.Node
	if m := n.Memory; m != nil && m.AvailableBytes != nil && m.WorkingSetBytes != nil {
		obs[SignalMemoryAvailable] = Observation{
			Available: int64(*m.AvailableBytes),
			Capacity:  int64(*m.AvailableBytes + *m.WorkingSetBytes),
			Time:      m.Time.Time,
		}
	}
	for _, c := range n.SystemContainers {
		if c.Name != statsapi.SystemContainerPods {
			continue
		}
		if m := c.Memory; m != nil && m.AvailableBytes != nil && m.WorkingSetBytes != nil {
			obs[SignalAllocatableMemoryAvailable] = Observation{
				Available: int64(*m.AvailableBytes),
				Capacity:  int64(*m.AvailableBytes + *m.WorkingSetBytes),
				Time:      m.Time.Time,
			}
		}
		break
	}
	observeFs(obs, n.Fs, SignalNodeFsAvailable, SignalNodeFsInodesFree)
	if n.Runtime != nil && n.Runtime.ImageFs != nil {
		observeFs(obs, n.Runtime.ImageFs, SignalImageFsAvailable, SignalImageFsInodesFree)
	} else {
		if o, ok := obs[SignalNodeFsAvailable]; ok {
			obs[SignalImageFsAvailable] = o
		}
		if o, ok := obs[SignalNodeFsInodesFree]; ok {
			obs[SignalImageFsInodesFree] = o
		}
	}
	if r := n.Rlimit; r != nil && r.MaxPID != nil && r.NumOfRunningProcesses != nil {
		obs[SignalPIDAvailable] = Observation{
			Available: *r.MaxPID - *r.NumOfRunningProcesses,
			Capacity:  *r.MaxPID,
			Time:      r.Time.Time,
		}
	}
	return obs
}

func observeFs(obs Observations, fs *statsapi.FsStats, bytes, inodes Signal) {
	if fs == nil {
		return
	}
	if fs.AvailableBytes != nil && fs.CapacityBytes != nil {
		obs[bytes] = Observation{Available: int64(*fs.AvailableBytes), Capacity: int64(*fs.CapacityBytes), Time: fs.Time.Time}
	}
	if fs.InodesFree != nil && fs.Inodes != nil {
		obs[inodes] = Observation{Available: int64(*fs.InodesFree), Capacity: int64(*fs.Inodes), Time: fs.Time.Time}
	}
}

// dedicatedImageFs reports whether the summary's imagefs is another
// filesystem than nodefs, which decides what reclaims and ranks for each
// (the kubelet asks cAdvisor for the devices). The summary names no
// devices, so two filesystems of the same size in bytes and inodes count
// as one, and so does an imagefs of unknown size: then nodefs pressure
// also collects images, which frees nothing when they were apart.
func dedicatedImageFs(s *statsapi.Summary) bool {
	if s == nil || s.Node.Runtime == nil || s.Node.Runtime.ImageFs == nil || s.Node.Fs == nil {
		return false
	}
	img, node := s.Node.Runtime.ImageFs, s.Node.Fs
	return differ(img.CapacityBytes, node.CapacityBytes) || differ(img.Inodes, node.Inodes)
}

// differ reports whether a and b are both known and different.
func differ(a, b *uint64) bool {
	return a != nil && b != nil && *a != *b
}

// Resource names a starved resource in messages, as the kubelet's
// signalToResource.
const (
	resourceInodes v1.ResourceName = "inodes"
	resourcePIDs   v1.ResourceName = "pids"
)

// resourceOf is the resource a signal measures.
func resourceOf(s Signal) v1.ResourceName {
	switch s {
	case SignalMemoryAvailable, SignalAllocatableMemoryAvailable:
		return v1.ResourceMemory
	case SignalNodeFsAvailable, SignalImageFsAvailable:
		return v1.ResourceEphemeralStorage
	case SignalNodeFsInodesFree, SignalImageFsInodesFree:
		return resourceInodes
	case SignalPIDAvailable:
		return resourcePIDs
	}
	return ""
}

// conditionOf is the node condition a met threshold of the signal raises.
func conditionOf(s Signal) v1.NodeConditionType {
	switch resourceOf(s) {
	case v1.ResourceMemory:
		return v1.NodeMemoryPressure
	case v1.ResourceEphemeralStorage, resourceInodes:
		return v1.NodeDiskPressure
	case resourcePIDs:
		return v1.NodePIDPressure
	}
	return ""
}

// quantity formats an amount of the resource as the kubelet prints it.
func quantity(r v1.ResourceName, v int64) *resource.Quantity {
	if r == v1.ResourceMemory || r == v1.ResourceEphemeralStorage {
		return resource.NewQuantity(v, resource.BinarySI)
	}
	return resource.NewQuantity(v, resource.DecimalSI)
}

// met reports whether t is met by o: available below the threshold, or,
// with withMinReclaim, below the threshold plus its minimum reclaim (the
// level pressure must clear before it counts as resolved).
func met(t Threshold, o Observation, withMinReclaim bool) bool {
	limit := t.Value.amount(o.Capacity)
	if withMinReclaim && t.MinReclaim != nil {
		limit += t.MinReclaim.amount(o.Capacity)
	}
	return o.Available < limit
}
