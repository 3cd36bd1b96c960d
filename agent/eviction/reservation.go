package eviction

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// HardReservation is what the hard thresholds keep out of node
// allocatable (the kubelet's hardEvictionReservation): memory.available's
// amount of memory and nodefs.available's of ephemeral-storage, a
// percentage taken of capacity. Pods admitted up to allocatable then
// leave the threshold's worth free.
func HardReservation(thresholds []Threshold, capacity v1.ResourceList) v1.ResourceList {
	out := v1.ResourceList{}
	for _, t := range thresholds {
		if !t.Hard() {
			continue
		}
		var name v1.ResourceName
		switch t.Signal {
		case SignalMemoryAvailable:
			name = v1.ResourceMemory
		case SignalNodeFsAvailable:
			name = v1.ResourceEphemeralStorage
		default:
			continue
		}
		c, ok := capacity[name]
		if !ok {
			continue
		}
		out[name] = *resource.NewQuantity(t.Value.amount(c.Value()), c.Format)
	}
	return out
}
