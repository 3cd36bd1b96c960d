package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"peapod/agent/eviction"
)

// validateResources checks the keys of the node's resources: cgroups,
// reservations, eviction thresholds (with the parser the agent uses) and
// garbage collection.
func (a *Agent) validateResources() error {
	if _, err := eviction.ParseThresholds(a.EvictionHard, a.EvictionSoft, a.EvictionSoftGracePeriod, a.EvictionMinimumReclaim, false); err != nil {
		return fmt.Errorf("agent.%w", err)
	}
	if r := a.CgroupRoot; r == "" || !filepath.IsAbs(r) || strings.Contains(r, "..") {
		return fmt.Errorf("agent.cgroup_root: %q must be an absolute cgroup path without ..", r)
	}
	for _, e := range a.EnforceNodeAllocatable {
		switch e {
		case "pods":
		case "none":
			if len(a.EnforceNodeAllocatable) > 1 {
				return fmt.Errorf("agent.enforce_node_allocatable: \"none\" cannot be combined with other values")
			}
		case "system-reserved", "kube-reserved":
			// The kubelet limits a named system cgroup; peapod has none to
			// name (no system_reserved_cgroup key), so it says so.
			return fmt.Errorf("agent.enforce_node_allocatable: %q is not supported (only \"pods\" or \"none\")", e)
		default:
			return fmt.Errorf("agent.enforce_node_allocatable: unknown value %q (want \"pods\" or \"none\")", e)
		}
	}
	for key, m := range map[string]map[string]string{"agent.system_reserved": a.SystemReserved, "agent.kube_reserved": a.KubeReserved} {
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if !slices.Contains(ReservedResources, n) {
				return fmt.Errorf("%s: unknown resource %q (want one of %s)", key, n, strings.Join(ReservedResources, ", "))
			}
			q, err := resource.ParseQuantity(m[n])
			if err != nil {
				return fmt.Errorf("%s.%s: %q: %w", key, n, m[n], err)
			}
			if q.Sign() < 0 {
				return fmt.Errorf("%s.%s: %q must not be negative", key, n, m[n])
			}
		}
	}
	if a.PodPidsLimit == 0 || a.PodPidsLimit < -1 {
		return fmt.Errorf("agent.pod_pids_limit: must be positive or -1 (no limit), got %d", a.PodPidsLimit)
	}
	hi, lo := a.ImageGCHighThresholdPercent, a.ImageGCLowThresholdPercent
	if hi < 0 || hi > 100 {
		return fmt.Errorf("agent.image_gc_high_threshold_percent: must be 0 to 100, got %d", hi)
	}
	if lo < 0 || lo > 100 {
		return fmt.Errorf("agent.image_gc_low_threshold_percent: must be 0 to 100, got %d", lo)
	}
	if lo >= hi && hi != 100 {
		return fmt.Errorf("agent.image_gc_low_threshold_percent (%d) must be below agent.image_gc_high_threshold_percent (%d)", lo, hi)
	}
	for key, d := range map[string]Duration{"agent.image_minimum_gc_age": a.ImageMinimumGCAge, "agent.image_maximum_gc_age": a.ImageMaximumGCAge, "agent.eviction_pressure_transition_period": a.EvictionPressureTransitionPeriod} {
		if d.Duration < 0 {
			return fmt.Errorf("%s: must not be negative, got %s", key, d.Duration)
		}
	}
	if m := a.ImageMaximumGCAge.Duration; m > 0 && m < a.ImageMinimumGCAge.Duration {
		return fmt.Errorf("agent.image_maximum_gc_age (%s) must not be below agent.image_minimum_gc_age (%s)", m, a.ImageMinimumGCAge.Duration)
	}
	for key, d := range map[string]Duration{"agent.image_gc_period": a.ImageGCPeriod, "agent.eviction_monitoring_period": a.EvictionMonitoringPeriod} {
		if d.Duration <= 0 {
			return fmt.Errorf("%s: must be positive, got %s", key, d.Duration)
		}
	}
	if a.MaxPerPodContainer == 0 {
		// The kubelet allows 0; peapod reads a container's lastState from
		// the runtime (the newest dead container), which 0 would remove.
		return fmt.Errorf("agent.max_per_pod_container: must be at least 1, or negative for no limit")
	}
	if a.EvictionMaxPodGracePeriod < 0 {
		return fmt.Errorf("agent.eviction_max_pod_grace_period: must not be negative, got %d", a.EvictionMaxPodGracePeriod)
	}
	return nil
}
