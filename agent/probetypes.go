package agent

import "peapod/probes"

// The probe types are peapod/probes' own, aliased, so that *probes.Manager
// satisfies Prober as is (checked below).

// ProbeKind is probes.Kind.
type ProbeKind = probes.Kind

const (
	ProbeLiveness  = probes.Liveness
	ProbeReadiness = probes.Readiness
	ProbeStartup   = probes.Startup
)

// ProbeResult is probes.Result.
type ProbeResult = probes.Result

const (
	ProbeUnknown = probes.Unknown
	ProbeSuccess = probes.Success
	ProbeFailure = probes.Failure
)

// ProbeUpdate is probes.Update.
type ProbeUpdate = probes.Update

var _ Prober = (*probes.Manager)(nil)
