package probes

import v1 "k8s.io/api/core/v1"

// defaultTerminationGracePeriodSeconds is the API default of
// pod.spec.terminationGracePeriodSeconds.
const defaultTerminationGracePeriodSeconds = 30

// KillGracePeriod is the grace period, in seconds, for killing container c
// of pod after its probe of kind k failed: the probe-level
// terminationGracePeriodSeconds of a liveness or startup probe when set,
// else the pod's (30 when unset), as the kubelet does.
func KillGracePeriod(pod *v1.Pod, c *v1.Container, k Kind) int64 {
	var p *v1.Probe
	switch k {
	case Liveness:
		p = c.LivenessProbe
	case Startup:
		p = c.StartupProbe
	}
	if p != nil && p.TerminationGracePeriodSeconds != nil {
		return *p.TerminationGracePeriodSeconds
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return *pod.Spec.TerminationGracePeriodSeconds
	}
	return defaultTerminationGracePeriodSeconds
}
