package node

import (
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Pressure thresholds. The first three are the kubelet's default hard
// eviction thresholds (memory.available<100Mi, nodefs.available<10%,
// nodefs.inodesFree<5%), so a node under peapod says "pressure" when a
// kubelet would have started evicting. The kubelet has no default PID
// threshold (it reports PIDPressure only when pid.available is
// configured); 10% leaves room for the processes that would resolve it.
const (
	memoryAvailableMin     = 100 << 20
	nodefsAvailablePercent = 10
	nodefsInodesPercent    = 5
	pidAvailablePercent    = 10

	// pressureTransitionPeriod is the kubelet's
	// evictionPressureTransitionPeriod default: a pressure condition stays
	// True this long after its signal was last seen, so that a node hovering
	// around a threshold does not flap between schedulable and not.
	pressureTransitionPeriod = 5 * time.Minute
)

// pressures is which pressure conditions are True.
type pressures struct {
	Memory, Disk, PID bool
}

// observePressure compares one reading with the thresholds. A value that
// could not be read (zero) is no evidence of pressure.
func observePressure(m machine) pressures {
	var p pressures
	if m.MemTotal > 0 {
		p.Memory = m.MemAvailable < memoryAvailableMin
	}
	if m.FSTotal > 0 {
		p.Disk = m.FSAvailable*100 < m.FSTotal*nodefsAvailablePercent
	}
	// Some filesystems (btrfs) report no inode counts at all.
	if m.FSInodes > 0 {
		p.Disk = p.Disk || m.FSInodesFree*100 < m.FSInodes*nodefsInodesPercent
	}
	if m.PIDMax > 0 {
		avail := max(m.PIDMax-m.PIDCount, 0)
		p.PID = avail*100 < m.PIDMax*pidAvailablePercent
	}
	return p
}

// pressureHold remembers when each pressure was last observed.
type pressureHold struct {
	memory, disk, pid time.Time
}

// apply returns the pressures to report: those observed now, and those
// observed within the transition period.
func (h *pressureHold) apply(observed pressures, now time.Time) pressures {
	hold := func(last *time.Time, seen bool) bool {
		if seen {
			*last = now
			return true
		}
		return !last.IsZero() && now.Sub(*last) < pressureTransitionPeriod
	}
	return pressures{
		Memory: hold(&h.memory, observed.Memory),
		Disk:   hold(&h.disk, observed.Disk),
		PID:    hold(&h.pid, observed.PID),
	}
}

// runtimeErrors turns the CRI Status answer into the reasons the node is
// not ready, worded as the kubelet words them (updateRuntimeUp).
func runtimeErrors(resp *runtimeapi.StatusResponse, err error) []error {
	if err != nil {
		return []error{fmt.Errorf("container runtime is down: %w", err)}
	}
	var errs []error
	if c := runtimeCondition(resp, runtimeapi.RuntimeReady); c == nil || !c.Status {
		errs = append(errs, fmt.Errorf("container runtime not ready: %s", conditionString(runtimeapi.RuntimeReady, c)))
	}
	if c := runtimeCondition(resp, runtimeapi.NetworkReady); c == nil || !c.Status {
		errs = append(errs, fmt.Errorf("container runtime network not ready: %s", conditionString(runtimeapi.NetworkReady, c)))
	}
	return errs
}

func runtimeCondition(resp *runtimeapi.StatusResponse, t string) *runtimeapi.RuntimeCondition {
	for _, c := range resp.GetStatus().GetConditions() {
		if c.GetType() == t {
			return c
		}
	}
	return nil
}

// conditionString is kubecontainer.RuntimeCondition.String; the kubelet
// prints "<nil>" for a condition the runtime did not report, we say so.
func conditionString(t string, c *runtimeapi.RuntimeCondition) string {
	if c == nil {
		return t + " not reported"
	}
	return fmt.Sprintf("%s=%t reason:%s message:%s", c.GetType(), c.GetStatus(), c.GetReason(), c.GetMessage())
}

// requiredCapacity is what the kubelet refuses to be Ready without (with
// local storage capacity isolation, the default).
var requiredCapacity = []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory, v1.ResourcePods, v1.ResourceEphemeralStorage}

// readyCondition is NodeReady for this round: not ready for any runtime
// error or missing capacity, all named in the message.
func readyCondition(runtimeErrs []error, capacity v1.ResourceList) v1.NodeCondition {
	errs := slices.Clone(runtimeErrs)
	var missing []string
	for _, r := range requiredCapacity {
		if _, ok := capacity[r]; !ok {
			missing = append(missing, string(r))
		}
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("missing node capacity for resources: %s", strings.Join(missing, ", ")))
	}
	if agg := utilerrors.NewAggregate(errs); agg != nil {
		return v1.NodeCondition{Type: v1.NodeReady, Status: v1.ConditionFalse, Reason: "KubeletNotReady", Message: agg.Error()}
	}
	return v1.NodeCondition{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"}
}

func memoryCondition(pressure bool) v1.NodeCondition {
	if pressure {
		return v1.NodeCondition{Type: v1.NodeMemoryPressure, Status: v1.ConditionTrue, Reason: "KubeletHasInsufficientMemory", Message: "kubelet has insufficient memory available"}
	}
	return v1.NodeCondition{Type: v1.NodeMemoryPressure, Status: v1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"}
}

func diskCondition(pressure bool) v1.NodeCondition {
	if pressure {
		return v1.NodeCondition{Type: v1.NodeDiskPressure, Status: v1.ConditionTrue, Reason: "KubeletHasDiskPressure", Message: "kubelet has disk pressure"}
	}
	return v1.NodeCondition{Type: v1.NodeDiskPressure, Status: v1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"}
}

func pidCondition(pressure bool) v1.NodeCondition {
	if pressure {
		return v1.NodeCondition{Type: v1.NodePIDPressure, Status: v1.ConditionTrue, Reason: "KubeletHasInsufficientPID", Message: "kubelet has insufficient PID available"}
	}
	return v1.NodeCondition{Type: v1.NodePIDPressure, Status: v1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available"}
}

// setConditions returns conds with each of want in place: the heartbeat is
// now, the transition time is kept while the status stays the same. A new
// condition goes at the end, in want's order (Ready last, which old
// control planes relied on). Conditions others own (NetworkUnavailable,
// node-problem-detector's) stay untouched: dropping them would make the
// status patch delete them.
func setConditions(conds []v1.NodeCondition, now time.Time, want ...v1.NodeCondition) []v1.NodeCondition {
	out := slices.Clone(conds)
	t := metav1.NewTime(now)
	for _, c := range want {
		c.LastHeartbeatTime = t
		c.LastTransitionTime = t
		i := slices.IndexFunc(out, func(o v1.NodeCondition) bool { return o.Type == c.Type })
		if i < 0 {
			out = append(out, c)
			continue
		}
		if out[i].Status == c.Status {
			c.LastTransitionTime = out[i].LastTransitionTime
		}
		out[i] = c
	}
	return out
}
