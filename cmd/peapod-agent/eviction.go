package main

import (
	"context"
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"

	"peapod/agent/eviction"
	"peapod/agent/imagegc"
	"peapod/config"
	"peapod/kubeletapi/stats"
)

// newEviction builds the eviction manager from [agent]: its signals are
// read from the stats provider's summary, node-level reclaim deletes
// unused images; the agent's pods are what it ranks and evicts.
func newEviction(cfg *config.Config, st *stats.Provider, images *imagegc.Manager,
	active func() []*v1.Pod, kill func(context.Context, *v1.Pod, v1.PodStatus, *int64) error) (*eviction.Manager, []eviction.Threshold, error) {
	a := cfg.Agent
	// The allocatable signal needs kubepods/ with its limit.
	enforcePods := a.CgroupsPerQOS && slices.Contains(a.EnforceNodeAllocatable, "pods")
	thresholds, err := eviction.ParseThresholds(a.EvictionHard, a.EvictionSoft, a.EvictionSoftGracePeriod, a.EvictionMinimumReclaim, enforcePods)
	if err != nil {
		return nil, nil, fmt.Errorf("agent.%w", err)
	}
	m, err := eviction.New(eviction.Options{
		Thresholds:               thresholds,
		PressureTransitionPeriod: a.EvictionPressureTransitionPeriod.Duration,
		MonitoringPeriod:         a.EvictionMonitoringPeriod.Duration,
		MaxPodGracePeriod:        a.EvictionMaxPodGracePeriod,
		Summary:                  st.Get,
		ActivePods:               active,
		KillPod:                  kill,
		ReclaimImages: func(ctx context.Context) error {
			_, err := images.DeleteUnusedImages(ctx)
			return err
		},
		// Dead containers are already collected at every pod sync down to
		// max_per_pod_container; removing the last ones of finished pods
		// would lose their status, which the agent reads from the CRI.
		ReclaimContainers: nil,
	})
	if err != nil {
		return nil, nil, err
	}
	return m, thresholds, nil
}
