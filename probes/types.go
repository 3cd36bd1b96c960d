package probes

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
)

// Kind is the kind of a probe: liveness, readiness or startup.
type Kind int

const (
	Liveness Kind = iota
	Readiness
	Startup
	numKinds
)

func (k Kind) String() string {
	switch k {
	case Liveness:
		return "Liveness"
	case Readiness:
		return "Readiness"
	case Startup:
		return "Startup"
	}
	return "Unknown"
}

// Result is the outcome of a probe, or the cached state of a container for
// one kind of probe.
type Result int

const (
	Unknown Result = iota
	Success
	Failure
)

func (r Result) String() string {
	switch r {
	case Success:
		return "Success"
	case Failure:
		return "Failure"
	}
	return "Unknown"
}

// Update is published on Manager.Updates when a cached result changes (and
// for the first result of each container id).
type Update struct {
	PodUID        types.UID
	PodName       string
	PodNamespace  string
	ContainerName string
	ContainerID   string
	Kind          Kind
	Result        Result
	Message       string
	// Warning: a success with a warning (a redirect to another host), sent
	// on each such probe; Result is unchanged, Message says why.
	Warning bool
}

// Runtime is the part of the CRI runtime service the prober needs.
// k8s.io/cri-api/pkg/apis.RuntimeService satisfies it.
//
// ExecSync must run cmd in the container and kill it when timeout passes.
// A nil error means exit code 0. A non-zero exit is an error with an
// ExitStatus() int method (k8s.io/utils/exec.CodeExitError, which
// k8s.io/cri-client returns) or an ExitCode() int method (os/exec.ExitError).
// A timeout is an error that wraps ErrExecTimeout or
// context.DeadlineExceeded, has gRPC status DeadlineExceeded, or says "timed
// out" (cri-client's ErrCommandTimedOut). Any other error means the probe
// could not run: its result is thrown away, as the kubelet does.
type Runtime interface {
	ExecSync(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (stdout []byte, stderr []byte, err error)
}

// ErrExecTimeout may be wrapped by a Runtime's ExecSync error when the
// command was killed because its timeout passed.
var ErrExecTimeout = errors.New("command timed out")

// Clock tells the time. Only "now" is taken from it (container start and
// initial delays); waits use real timers.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Options configure a Manager.
type Options struct {
	// Runtime runs exec probes. Required when any container has one.
	Runtime Runtime
	// Registerer receives the probe metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Clock defaults to the wall clock.
	Clock Clock

	// unit is the length of one "second" of probe timing (periods, delays,
	// timeouts). time.Second outside tests; tests shrink it.
	unit time.Duration
}
