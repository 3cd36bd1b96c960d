package main

import (
	criapi "k8s.io/cri-api/pkg/apis"

	"peapod/agent/imagegc"
	"peapod/config"
)

// newImageGC builds the image garbage collector from [agent]: it talks to
// the runtime through the same CRI clients as the agent.
func newImageGC(cfg *config.Config, rs criapi.RuntimeService, is criapi.ImageManagerService) (*imagegc.Manager, error) {
	a := cfg.Agent
	return imagegc.New(imagegc.Options{
		Images:               is,
		Runtime:              rs,
		HighThresholdPercent: a.ImageGCHighThresholdPercent,
		LowThresholdPercent:  a.ImageGCLowThresholdPercent,
		MinAge:               a.ImageMinimumGCAge.Duration,
		MaxAge:               a.ImageMaximumGCAge.Duration,
		Period:               a.ImageGCPeriod.Duration,
	})
}
