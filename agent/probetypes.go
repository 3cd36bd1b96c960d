package agent

import "k8s.io/apimachinery/pkg/types"

// Mirrors of peapod/probes' Kind, Result and Update, with the same values.
// When peapod/probes builds, these become aliases (type ProbeKind =
// probes.Kind, ...) so that *probes.Manager satisfies Prober as is.

// ProbeKind is probes.Kind.
type ProbeKind int

const (
	ProbeLiveness ProbeKind = iota
	ProbeReadiness
	ProbeStartup
)

// ProbeResult is probes.Result.
type ProbeResult int

const (
	ProbeUnknown ProbeResult = iota
	ProbeSuccess
	ProbeFailure
)

// ProbeUpdate is probes.Update.
type ProbeUpdate struct {
	PodUID        types.UID
	PodName       string
	PodNamespace  string
	ContainerName string
	ContainerID   string
	Kind          ProbeKind
	Result        ProbeResult
	Message       string
}
