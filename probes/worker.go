package probes

import (
	"context"
	"math/rand/v2"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// Defaults of the v1.Probe fields the API server would fill in; static pods
// read from YAML by the agent are not defaulted by anyone else.
const (
	defaultPeriodSeconds    = 10
	defaultTimeoutSeconds   = 1
	defaultSuccessThreshold = 1
	defaultFailureThreshold = 3
)

// worker probes one container for one kind of probe.
type worker struct {
	m                     *Manager
	kind                  Kind
	key                   containerKey
	podName, podNamespace string
	containerID           string
	probe                 *v1.Probe
	target                target

	period, timeout, initialDelay time.Duration
	successThreshold              int32
	failureThreshold              int32
	started                       time.Time // container start
	firstWait                     time.Duration

	metrics workerMetrics

	ctx    context.Context // cancelled by stop; aborts an in-flight probe
	cancel context.CancelFunc
	done   <-chan struct{}
	kick   chan struct{} // poke: probe now
	state  runState
}

func newWorker(m *Manager, k Kind, key containerKey, pod *v1.Pod, c *v1.Container, p *v1.Probe, containerID, podIP string, started, now time.Time) *worker {
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{
		m: m, kind: k, key: key,
		podName: pod.Name, podNamespace: pod.Namespace,
		containerID: containerID,
		probe:       p,
		target:      target{containerID: containerID, podIP: podIP, container: c},

		period:           seconds(p.PeriodSeconds, defaultPeriodSeconds, m.unit),
		timeout:          seconds(p.TimeoutSeconds, defaultTimeoutSeconds, m.unit),
		initialDelay:     time.Duration(max(p.InitialDelaySeconds, 0)) * m.unit,
		successThreshold: orDefault(p.SuccessThreshold, defaultSuccessThreshold),
		failureThreshold: orDefault(p.FailureThreshold, defaultFailureThreshold),
		started:          started,

		metrics: m.metrics.forWorker(k, c.Name, pod.Name, pod.Namespace),
		ctx:     ctx,
		cancel:  cancel,
		done:    ctx.Done(),
		kick:    make(chan struct{}, 1),
		state:   runState{last: Unknown},
	}
	if k == Liveness {
		w.successThreshold = 1 // the API requires it; a liveness run of successes means nothing
	}
	w.firstWait = firstWait(k, now.Sub(started), w.initialDelay, w.period, rand.Float64())
	return w
}

func seconds(v, def int32, unit time.Duration) time.Duration {
	return time.Duration(orDefault(v, def)) * unit
}

func orDefault(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

// firstWait is how long a new worker waits before its first probe: the
// rest of the initial delay, plus a random part of a period so that workers
// started together (an agent restart re-adding every container) do not
// probe in lock-step. A readiness or startup probe of a container that has
// just started skips the jitter: pod start latency hangs on it, and the
// container start times are what spreads those workers.
func firstWait(k Kind, sinceStart, initialDelay, period time.Duration, r float64) time.Duration {
	wait := max(initialDelay-sinceStart, 0)
	fresh := sinceStart < period
	if k == Liveness || !fresh {
		wait += time.Duration(r * float64(period))
	}
	return wait
}

func (w *worker) stop() { w.cancel() }

func (w *worker) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *worker) run() {
	defer w.m.wg.Done()
	defer w.cancel()

	t := time.NewTimer(w.firstWait)
	defer t.Stop()
	select {
	case <-w.done:
		return
	case <-t.C:
	case <-w.kick:
	}
	tick := time.NewTicker(w.period)
	defer tick.Stop()
	for w.doProbe() {
		select {
		case <-w.done:
			return
		case <-tick.C:
		case <-w.kick:
		}
	}
}

// doProbe runs one probe and acts on its result; false ends the worker.
func (w *worker) doProbe() bool {
	if w.kind != Startup && w.m.gated(w) {
		return true
	}
	if w.m.clock.Now().Sub(w.started) < w.initialDelay {
		return true
	}

	begin := time.Now()
	r, msg, err := w.m.prober.run(w.ctx, w.probe, w.target, w.timeout)
	w.metrics.duration.Observe(time.Since(begin).Seconds())
	if w.ctx.Err() != nil {
		return false // stopped mid-probe: the result means nothing
	}
	switch r {
	case Success:
		w.metrics.successful.Inc()
	case Failure:
		w.metrics.failed.Inc()
		klog.V(2).InfoS("Probe failed", "probeType", w.kind, "pod", klog.KRef(w.podNamespace, w.podName),
			"containerName", w.key.name, "output", truncate(msg, maxMessage))
	default:
		w.metrics.unknown.Inc()
		klog.V(2).InfoS("Probe errored", "probeType", w.kind, "pod", klog.KRef(w.podNamespace, w.podName),
			"containerName", w.key.name, "err", err)
	}

	if r == Success && strings.HasPrefix(msg, redirectWarning) {
		w.m.warn(w, msg)
	}
	var act action
	w.state, act = decide(w.kind, w.state, r, w.successThreshold, w.failureThreshold)
	if act.report && !w.m.set(w, r, msg) {
		return false
	}
	return !act.stop
}

// runState is a worker's count of equal consecutive probe results.
type runState struct {
	last Result
	run  int32
}

type action struct {
	report bool // the result is established: cache it (publish if changed)
	stop   bool // the worker ends
}

// decide folds probe result r into the run state. A run of equal results
// reaching its threshold establishes the result. An Unknown result (the
// prober could not probe) is thrown away and leaves the run as it was.
// Liveness and startup workers end after establishing Failure (the agent
// kills the container; a new container id brings new workers), a startup
// worker also after Success (it has done its job).
func decide(k Kind, s runState, r Result, successThreshold, failureThreshold int32) (runState, action) {
	if r != Success && r != Failure {
		return s, action{}
	}
	if r == s.last {
		s.run++
	} else {
		s = runState{last: r, run: 1}
	}
	if (r == Success && s.run < successThreshold) || (r == Failure && s.run < failureThreshold) {
		return s, action{}
	}
	a := action{report: true}
	if r == Failure && (k == Liveness || k == Startup) {
		a.stop = true
		s.run = 0
	}
	if r == Success && k == Startup {
		a.stop = true
	}
	return s, a
}
