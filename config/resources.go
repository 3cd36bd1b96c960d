package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EvictionSignals are the signals the eviction_* keys take.
var EvictionSignals = []string{"memory.available", "nodefs.available", "nodefs.inodesFree", "imagefs.available", "imagefs.inodesFree", "pid.available"}

// quantity is the syntax of a Kubernetes resource quantity ("100Mi",
// "0.5", "500m", "1e3"). The runtime binary links no Kubernetes package
// (cmd/peapod's deps test), so config checks the syntax itself;
// peapod-agent parses the values with apimachinery when it starts.
var quantity = regexp.MustCompile(`^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$`)

// validateResources checks the keys of the node's resources: cgroups,
// reservations, eviction thresholds and garbage collection.
func (a *Agent) validateResources() error {
	if err := a.validateEviction(); err != nil {
		return err
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
			if !quantity.MatchString(m[n]) {
				return fmt.Errorf("%s.%s: %q is not a quantity (such as 500m, 1Gi)", key, n, m[n])
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

// validateEviction checks the eviction_* maps as the kubelet's
// ParseThresholdConfig does: known signals, a quantity or a percentage
// from 0% to 100%, a grace period for each soft threshold and none
// without one.
func (a *Agent) validateEviction() error {
	check := func(key string, m map[string]string, value func(string) error) error {
		for _, sig := range sortedKeys(m) {
			if !slices.Contains(EvictionSignals, sig) {
				return fmt.Errorf("agent.%s: unknown signal %q (want one of %s)", key, sig, strings.Join(EvictionSignals, ", "))
			}
			if err := value(m[sig]); err != nil {
				return fmt.Errorf("agent.%s.%s: %w", key, sig, err)
			}
		}
		return nil
	}
	threshold := func(v string) error {
		if p, ok := strings.CutSuffix(v, "%"); ok {
			f, err := strconv.ParseFloat(p, 64)
			if err != nil || f < 0 || f > 100 {
				return fmt.Errorf("%q is not a percentage from 0%% to 100%%", v)
			}
			return nil
		}
		if !quantity.MatchString(v) {
			return fmt.Errorf("%q is neither a quantity (100Mi) nor a percentage (10%%)", v)
		}
		return nil
	}
	grace := func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q is not a positive duration (such as 1m30s)", v)
		}
		return nil
	}
	for _, c := range []struct {
		key   string
		m     map[string]string
		value func(string) error
	}{
		{"eviction_hard", a.EvictionHard, threshold},
		{"eviction_soft", a.EvictionSoft, threshold},
		{"eviction_soft_grace_period", a.EvictionSoftGracePeriod, grace},
		{"eviction_minimum_reclaim", a.EvictionMinimumReclaim, threshold},
	} {
		if err := check(c.key, c.m, c.value); err != nil {
			return err
		}
	}
	for _, sig := range sortedKeys(a.EvictionSoft) {
		if _, ok := a.EvictionSoftGracePeriod[sig]; !ok {
			return fmt.Errorf("agent.eviction_soft.%s: a soft threshold needs agent.eviction_soft_grace_period.%s", sig, sig)
		}
	}
	for _, sig := range sortedKeys(a.EvictionSoftGracePeriod) {
		if _, ok := a.EvictionSoft[sig]; !ok {
			return fmt.Errorf("agent.eviction_soft_grace_period.%s: no agent.eviction_soft.%s threshold to go with it", sig, sig)
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
