package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// The act half of a pod sync. One worker goroutine per pod:
//
//	         ┌──────────── wake (probe update, back-off over, period) ─┐
//	start ─► observe (CRI) ─► computePodActions ─► execute ─► status ──┘
//	                                                      │
//	    pod file removed ─► terminate (preStop, stop, remove, volumes) ─► exit
//	    agent stopping   ─► exit, leaving the pod running (adopted next start)

// minGracePeriod is the least time StopContainer gets (the kubelet's
// minimumGracePeriodInSeconds).
const minGracePeriod = 2

type waitingInfo struct {
	Reason, Message string
}

type worker struct {
	a   *Agent
	pod *v1.Pod

	wake      chan struct{}
	terminate chan struct{}
	done      chan struct{}

	mu     sync.Mutex
	status v1.PodStatus
	// statusKnown is set by the first updateStatus: until the worker has
	// looked at the runtime, status is empty and must not reach the API
	// server (it would wipe the pod's container statuses and conditions,
	// as after an agent restart).
	statusKnown bool
	firstSeen   time.Time
	// waiting holds the reason a container is not running, per name.
	waiting map[string]waitingInfo
	// podError is shown in status.message (sandbox or volume failures).
	podError string
	// liveFailed holds, per container id, the probe whose failure the
	// prober reported: "liveness" or "startup".
	liveFailed map[string]string
	// termMessages caches the termination message per container id.
	termMessages map[string]string
	// pullFailedAt is when the last pull of an image failed.
	pullFailedAt map[string]time.Time
	// probed holds the container ids registered with the prober.
	probed       map[string]bool
	mounts       map[string][]*runtimeapi.Mount
	volumesReady bool
	// startObserved: the start duration metric was recorded (or the pod was
	// adopted already running).
	startObserved bool
	terminated    bool
	nextWake      time.Time
	// deletionGrace is the grace period of the pod's deletion in the API
	// server, which wins over spec.terminationGracePeriodSeconds.
	deletionGrace *int64
	// pendingPod is a newer version of pod from the API server, taken
	// over at the start of the next sync.
	pendingPod *v1.Pod
	// failure, once set, makes the pod Failed for good: it ran longer
	// than spec.activeDeadlineSeconds, or the node evicted it. Its
	// containers are stopped and never start again.
	failure *podFailure
	// released: the terminal pod's volumes and cgroup are gone (the
	// kubelet's SyncTerminatedPod); its containers stay for their logs.
	released bool
}

// podFailure is why a pod was made Failed by the node.
type podFailure struct {
	reason, message string
	// conditions are added to the pod's (DisruptionTarget on eviction).
	conditions []v1.PodCondition
	// grace, when set, is the stop grace period (0 for a hard eviction).
	grace *int64
	// stopped is closed once the containers are stopped and the pod's
	// resources released; stoppedOnce guards it.
	stopped     chan struct{}
	stoppedOnce sync.Once
}

func (f *podFailure) markStopped() { f.stoppedOnce.Do(func() { close(f.stopped) }) }

// currentFailure is the pod's failure, nil when none.
func (w *worker) currentFailure() *podFailure {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failure
}

// fail makes the pod Failed for good (the first failure wins) and returns
// the failure in force.
func (w *worker) fail(f *podFailure) *podFailure {
	w.mu.Lock()
	if w.failure == nil {
		f.stopped = make(chan struct{})
		w.failure = f
	}
	f = w.failure
	w.mu.Unlock()
	w.kick()
	return f
}

// deadlineMessage is the kubelet's message for DeadlineExceeded.
const deadlineMessage = "Pod was active on the node longer than the specified deadline"

// pastDeadline tells whether the pod has been active longer than its
// spec.activeDeadlineSeconds, counted from its start time as the
// kubelet's activeDeadlineHandler does.
func (w *worker) pastDeadline() bool {
	d := w.pod.Spec.ActiveDeadlineSeconds
	if d == nil {
		return false
	}
	w.mu.Lock()
	start := w.firstSeen
	if st := w.status.StartTime; st != nil {
		start = st.Time
	}
	w.mu.Unlock()
	until := start.Add(time.Duration(*d) * time.Second)
	if w.a.clock.Now().Before(until) {
		w.wakeAt(until)
		return false
	}
	return true
}

// updatePod hands the worker a newer version of its pod.
func (w *worker) updatePod(p *v1.Pod) {
	w.mu.Lock()
	w.pendingPod = p
	w.mu.Unlock()
	w.kick()
}

// currentPod is the worker's pod, for readers outside its goroutine (only
// the worker goroutine replaces w.pod, holding Agent.mu and w.mu).
func (w *worker) currentPod() *v1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

// takePendingPod switches to a newer version of the pod, if any. Volumes
// are set up again so that downward API files follow the labels and
// annotations.
func (w *worker) takePendingPod(ctx context.Context) {
	w.mu.Lock()
	np := w.pendingPod
	w.pendingPod = nil
	w.mu.Unlock()
	if np == nil {
		return
	}
	w.a.mu.Lock()
	w.mu.Lock()
	w.pod = np
	w.mu.Unlock()
	w.a.mu.Unlock()
	if w.volumesReady {
		w.volumesReady = false
		if err := w.ensureVolumes(ctx); err != nil {
			w.log().Error(err, "Updating volumes for the changed pod failed")
		}
	}
}

func newWorker(a *Agent, pod *v1.Pod) *worker {
	return &worker{
		a: a, pod: pod,
		wake:         make(chan struct{}, 1),
		terminate:    make(chan struct{}),
		done:         make(chan struct{}),
		firstSeen:    a.clock.Now(),
		waiting:      map[string]waitingInfo{},
		liveFailed:   map[string]string{},
		termMessages: map[string]string{},
		pullFailedAt: map[string]time.Time{},
		probed:       map[string]bool{},
	}
}

func (w *worker) kick() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) log() klog.Logger {
	return klog.Background().WithValues("pod", klog.KObj(w.pod), "podUID", w.pod.UID)
}

// run is the worker goroutine.
func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	terminating := false
	term := w.terminate
	for {
		if !terminating {
			// Told to stop before (or while) running: never sync first.
			select {
			case <-term:
				terminating, term = true, nil
			default:
			}
		}
		if terminating {
			if err := w.terminatePod(ctx, true); err != nil {
				w.log().Error(err, "Terminating pod failed; retrying")
			} else {
				return
			}
		} else {
			w.sync(ctx)
		}
		wait := w.a.resyncPeriod()
		w.mu.Lock()
		if !w.nextWake.IsZero() {
			if d := w.nextWake.Sub(w.a.clock.Now()); d < wait {
				wait = max(d, time.Millisecond)
			}
			w.nextWake = time.Time{}
		}
		w.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-term:
			terminating = true
			term = nil // a nil channel blocks: terminate once
		case <-w.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func (w *worker) wakeAt(t time.Time) {
	w.mu.Lock()
	if w.nextWake.IsZero() || t.Before(w.nextWake) {
		w.nextWake = t
	}
	w.mu.Unlock()
}

func (w *worker) setWaiting(name, reason, message string) {
	w.mu.Lock()
	w.waiting[name] = waitingInfo{reason, message}
	w.mu.Unlock()
}

func (w *worker) clearWaiting(name string) {
	w.mu.Lock()
	delete(w.waiting, name)
	w.mu.Unlock()
}

func (w *worker) setPodError(msg string) {
	w.mu.Lock()
	w.podError = msg
	w.mu.Unlock()
}

// sync is one observe → decide → act → status round.
func (w *worker) sync(ctx context.Context) {
	w.takePendingPod(ctx)
	st, err := w.observe(ctx)
	if err != nil {
		w.log().Error(err, "Reading pod state from the runtime failed")
		w.setPodError("runtime: " + err.Error())
		return
	}
	if _, known := w.knownStatus(); !known {
		// The first status as observed, before a sandbox, pull or start
		// that can take long: a new pod shows ContainerCreating meanwhile,
		// as the kubelet's SyncPod sets the status before acting.
		w.updateStatus(st)
	}
	if w.currentFailure() == nil && w.pastDeadline() {
		w.log().Info("Pod exceeded its active deadline; stopping it", "activeDeadlineSeconds", *w.pod.Spec.ActiveDeadlineSeconds)
		w.a.event(w.pod, v1.EventTypeWarning, "DeadlineExceeded", "%s", deadlineMessage)
		w.fail(&podFailure{reason: "DeadlineExceeded", message: deadlineMessage})
	}
	if f := w.currentFailure(); f != nil {
		err := w.killPod(ctx, st, false)
		if err != nil {
			w.log().Error(err, "Stopping the failed pod failed; retrying", "reason", f.reason)
		}
		if pr := w.a.o.Prober; pr != nil {
			pr.RemovePod(w.pod.UID)
		}
		if st2, err := w.observeFresh(ctx); err == nil {
			st = st2
		}
		w.updateStatus(st)
		if err == nil && w.release(ctx, st) {
			f.markStopped()
		}
		return
	}
	acts := computePodActions(w.pod, st)
	if !w.startObserved && len(st.Sandboxes) > 0 && st.Sandboxes[0].Ready && len(acts.ContainersToStart) == 0 &&
		len(acts.InitContainersToStart) == 0 && !acts.CreateSandbox && allRunning(w.pod, st) {
		// Adopted (or already complete): no start duration to measure.
		w.startObserved = true
	}
	changed := w.execute(ctx, st, acts)
	if changed {
		if st2, err := w.observeFresh(ctx); err == nil {
			st = st2
		}
	}
	w.gc(ctx, st)
	w.registerWithProber(st)
	w.updateStatus(st)
	if !w.startObserved {
		if allRunning(w.pod, st) {
			w.startObserved = true
			w.a.metrics.podStart.Observe(w.a.clock.Now().Sub(w.firstSeen).Seconds())
		}
	}
}

// registerWithProber hands running containers the prober does not know yet
// (adopted after an agent restart) to it.
func (w *worker) registerWithProber(st *PodStatusObserved) {
	pr := w.a.o.Prober
	sb := st.latestSandbox()
	if pr == nil || sb == nil || !sb.Ready || w.terminated {
		return
	}
	podIP := ""
	if len(sb.IPs) > 0 {
		podIP = sb.IPs[0]
	}
	for _, c := range st.Containers {
		spec := findContainer(w.pod, c.Name)
		if !c.running() || c.SandboxID != sb.ID || spec == nil {
			continue
		}
		w.mu.Lock()
		known := w.probed[c.ID]
		w.probed[c.ID] = true
		w.mu.Unlock()
		if !known {
			pr.AddContainer(w.pod, spec, c.ID, podIP)
		}
	}
}

func allRunning(pod *v1.Pod, st *PodStatusObserved) bool {
	sb := st.latestSandbox()
	if sb == nil || !sb.Ready {
		return false
	}
	for i := range pod.Spec.Containers {
		c := st.latestIn(pod.Spec.Containers[i].Name, sb.ID)
		if c == nil || !c.running() {
			return false
		}
	}
	return true
}

// observe reads the pod's sandboxes and containers from the runtime.
func (w *worker) observe(ctx context.Context) (*PodStatusObserved, error) {
	return observePod(ctx, w.a, w.pod, w)
}

// observeFresh observes from a new CRI list, to see what the worker just did.
func (w *worker) observeFresh(ctx context.Context) (*PodStatusObserved, error) {
	return observePodFresh(ctx, w.a, w.pod, w)
}

func observePod(ctx context.Context, a *Agent, pod *v1.Pod, w *worker) (*PodStatusObserved, error) {
	return observePodAged(ctx, a, pod, w, a.syncPeriod/2)
}

// observePodFresh observes pod from a new CRI list: after acting on it.
func observePodFresh(ctx context.Context, a *Agent, pod *v1.Pod, w *worker) (*PodStatusObserved, error) {
	return observePodAged(ctx, a, pod, w, 0)
}

// observePodAged reads pod's state from the runtime, through the shared
// list of the agent's sandboxes and containers when it is not older than
// maxAge.
func observePodAged(ctx context.Context, a *Agent, pod *v1.Pod, w *worker, maxAge time.Duration) (*PodStatusObserved, error) {
	rt := a.o.Runtime
	allSbs, allCtrs, err := a.cri.snapshot(ctx, rt, a.clock.Now(), maxAge)
	if err != nil {
		return nil, err
	}
	uid := string(pod.UID)
	st := &PodStatusObserved{Now: a.clock.Now()}
	for _, s := range allSbs {
		if s.Labels[labelPodUID] != uid {
			continue
		}
		so := &SandboxObserved{ID: s.Id, Ready: s.State == runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: time.Unix(0, s.CreatedAt)}
		if s.Metadata != nil {
			so.Attempt = s.Metadata.Attempt
		}
		st.Sandboxes = append(st.Sandboxes, so)
	}
	sort.SliceStable(st.Sandboxes, func(i, j int) bool {
		a, b := st.Sandboxes[i], st.Sandboxes[j]
		if a.Attempt != b.Attempt {
			return a.Attempt > b.Attempt
		}
		return a.CreatedAt.After(b.CreatedAt)
	})
	if sb := st.latestSandbox(); sb != nil && sb.Ready {
		sb.IPs = a.cri.sandboxIPs(ctx, rt, sb.ID)
		if pod.Spec.HostNetwork {
			sb.IPs = a.nodeIPs
		}
	}
	var cs []*runtimeapi.Container
	for _, c := range allCtrs {
		if c.Labels[labelPodUID] == uid {
			cs = append(cs, c)
		}
	}
	for _, c := range cs {
		s, err := a.cri.containerStatus(ctx, rt, c)
		if err != nil || s == nil {
			continue // removed meanwhile
		}
		co := &ContainerObserved{
			ID: s.Id, SandboxID: c.PodSandboxId, State: s.State, ExitCode: s.ExitCode,
			Reason: s.Reason, Message: s.Message,
			CreatedAt: nsTime(s.CreatedAt), StartedAt: nsTime(s.StartedAt), FinishedAt: nsTime(s.FinishedAt),
			Hash: s.Annotations[annotationContainerHash], ImageRef: s.ImageRef,
		}
		if s.Metadata != nil {
			co.Name, co.Attempt = s.Metadata.Name, s.Metadata.Attempt
		} else {
			co.Name = s.Labels[labelContainerName]
		}
		if s.Image != nil {
			co.Image = s.Image.Image
		}
		if co.ImageRef == "" {
			co.ImageRef = s.ImageId
		}
		st.Containers = append(st.Containers, co)
		spec := findContainer(pod, co.Name)
		if co.exited() {
			if w != nil {
				co.Message = w.terminationMessage(co, s, spec)
			}
			if spec != nil {
				if until, delay, ok := a.backOff.Get(backOffKey(pod, spec), co.FinishedAt); ok {
					co.BackOffUntil, co.BackOffDelay = until, delay
				}
			}
		}
		if co.running() {
			co.Started, co.Ready = probeState(a, pod, spec)
			if w != nil {
				w.mu.Lock()
				co.ProbeFailed = w.liveFailed[co.ID]
				w.mu.Unlock()
			}
		}
	}
	sort.SliceStable(st.Containers, func(i, j int) bool {
		a, b := st.Containers[i], st.Containers[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Attempt != b.Attempt {
			return a.Attempt > b.Attempt
		}
		return a.CreatedAt.After(b.CreatedAt)
	})
	return st, nil
}

func nsTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// probeState tells whether a running container has started (startup probe)
// and is ready (readiness probe). Without a prober, probes are ignored.
func probeState(a *Agent, pod *v1.Pod, spec *v1.Container) (started, ready bool) {
	if spec == nil {
		return true, false
	}
	p := a.o.Prober
	started = spec.StartupProbe == nil || p == nil || p.Result(pod.UID, spec.Name, ProbeStartup) == ProbeSuccess
	ready = started && (spec.ReadinessProbe == nil || p == nil || p.Result(pod.UID, spec.Name, ProbeReadiness) == ProbeSuccess)
	return started, ready
}

// backOffKey identifies a container's restart back-off: pod, container and
// the hash of its spec.
func backOffKey(pod *v1.Pod, c *v1.Container) string {
	return fmt.Sprintf("%s_%s_%s_%s_%s", pod.Name, pod.Namespace, pod.UID, c.Name, containerHash(c))
}

// execute carries out acts; it returns whether it changed anything.
func (w *worker) execute(ctx context.Context, st *PodStatusObserved, acts podActions) bool {
	changed := false
	if acts.KillPod {
		changed = true
		if err := w.killPod(ctx, st, false); err != nil {
			w.log().Error(err, "Killing pod failed")
			return changed
		}
	}
	for _, k := range acts.ContainersToKill {
		changed = true
		c := findObserved(st, k.ID)
		w.log().Info("Killing container", "container", k.Name, "reason", k.Reason)
		w.a.event(w.pod, v1.EventTypeNormal, "Killing", "%s", killingMessage(k))
		if err := w.killContainer(ctx, c, killGrace(w.pod, k), k.Reason); err != nil {
			w.log().Error(err, "Killing container failed", "container", k.Name)
		}
	}
	for _, b := range acts.BackOff {
		w.setWaiting(b.Name, "CrashLoopBackOff", b.Message)
		w.a.event(w.pod, v1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s", b.Name, klog.KObj(w.pod))
		w.wakeAt(b.Until)
	}
	if acts.Terminal {
		if p := w.a.o.Prober; p != nil && !w.terminated {
			p.RemovePod(w.pod.UID)
		}
		w.terminated = true
		w.release(ctx, st)
		return changed
	}
	if !acts.CreateSandbox && len(acts.InitContainersToStart) == 0 && len(acts.ContainersToStart) == 0 && len(acts.EphemeralContainersToStart) == 0 {
		return changed
	}
	changed = true
	if err := w.ensureVolumes(ctx); err != nil {
		w.setPodError(err.Error())
		return changed
	}
	sandboxID := acts.SandboxID
	attempt := acts.Attempt
	var podIPs []string
	if sb := st.latestSandbox(); !acts.CreateSandbox && sb != nil {
		attempt = sb.Attempt
		podIPs = sb.IPs
	}
	var handler *string
	if acts.CreateSandbox {
		// The kubelet resolves the RuntimeClass before it allocates the
		// pod's user namespace: a pod that cannot run holds no ids.
		h, err := w.a.runtimeHandler(w.pod)
		if err != nil {
			w.sandboxFailed(err)
			return changed
		}
		handler = &h
	}
	userns, err := w.a.podUserNamespace(ctx, w.pod, handler)
	if err != nil {
		w.sandboxFailed(err)
		return changed
	}
	sbCfg, err := makeSandboxConfig(w.pod, attempt, w.a.o.PodLogsDir, w.a.dnsSettings(), userns)
	if err != nil {
		w.setPodError("sandbox config: " + err.Error())
		return changed
	}
	if cg := w.a.o.Cgroups; cg != nil {
		// The kubelet names the pod's cgroup in every sandbox config; the
		// cgroup itself is (re)made with the pod's limits before a sandbox.
		if acts.CreateSandbox {
			parent, err := cg.EnsurePod(w.pod)
			if err != nil {
				w.log().Error(err, "Creating the pod cgroup failed")
				w.setPodError("failed to create pod cgroup: " + err.Error())
				return changed
			}
			sbCfg.Linux.CgroupParent = parent
		} else {
			sbCfg.Linux.CgroupParent = cg.PodCgroup(w.pod)
		}
	}
	if acts.CreateSandbox {
		_ = os.MkdirAll(sbCfg.LogDirectory, 0o755)
		id, err := w.a.o.Runtime.RunPodSandbox(ctx, sbCfg, *handler)
		if err != nil {
			w.sandboxFailed(err)
			return changed
		}
		w.log().Info("Created pod sandbox", "sandbox", id, "attempt", attempt, "runtimeHandler", *handler)
		sandboxID = id
		if w.pod.Spec.HostNetwork {
			podIPs = w.a.nodeIPs
		} else if resp, err := w.a.o.Runtime.PodSandboxStatus(ctx, id, false); err == nil && resp.GetStatus().GetNetwork() != nil {
			if ip := resp.Status.Network.Ip; ip != "" {
				podIPs = append(podIPs, ip)
			}
			for _, ip := range resp.Status.Network.AdditionalIps {
				podIPs = append(podIPs, ip.Ip)
			}
		}
	}
	w.setPodError("")
	for _, i := range acts.EphemeralContainersToStart {
		ec := &w.pod.Spec.EphemeralContainers[i]
		target := ""
		if ec.TargetContainerName != "" {
			if tc := st.latestIn(ec.TargetContainerName, sandboxID); tc != nil && tc.running() {
				target = tc.ID
			}
		}
		_ = w.startContainer(ctx, sandboxID, sbCfg, podIPs, ephemeralAsContainer(ec), st, target)
	}
	for _, i := range acts.InitContainersToStart {
		c := &w.pod.Spec.InitContainers[i]
		if err := w.startContainer(ctx, sandboxID, sbCfg, podIPs, c, st, ""); err != nil {
			return changed // a failed init container blocks what follows
		}
	}
	for _, i := range acts.ContainersToStart {
		_ = w.startContainer(ctx, sandboxID, sbCfg, podIPs, &w.pod.Spec.Containers[i], st, "")
	}
	return changed
}

// sandboxFailed reports a sandbox that could not be made, in the
// kubelet's words: status message and a FailedCreatePodSandBox event.
func (w *worker) sandboxFailed(err error) {
	w.log().Error(err, "Creating pod sandbox failed")
	w.setPodError("failed to create pod sandbox: " + err.Error())
	w.a.event(w.pod, v1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
}

func findObserved(st *PodStatusObserved, id string) *ContainerObserved {
	for _, c := range st.Containers {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// needsVolumeManager tells whether pod has volumes the agent cannot make
// itself (anything but emptyDir).
func needsVolumeManager(pod *v1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir == nil {
			return true
		}
	}
	return false
}

// ensureVolumes sets the pod's volumes up once per worker (SetupPod is
// idempotent, so after an agent restart it is called again).
func (w *worker) ensureVolumes(ctx context.Context) error {
	if w.volumesReady {
		return nil
	}
	if len(w.pod.Spec.Volumes) == 0 {
		w.volumesReady = true
		return nil
	}
	if w.a.o.Volumes == nil {
		if needsVolumeManager(w.pod) {
			w.markAllWaiting("ContainerCreating", "volumes not available")
			return errors.New("volumes not available")
		}
		m, err := w.emptyDirMounts()
		if err != nil {
			return err
		}
		w.mounts, w.volumesReady = m, true
		return nil
	}
	objs, err := w.podObjects(ctx)
	if err != nil {
		msg := "volume setup: " + err.Error()
		w.markAllWaiting("ContainerCreating", msg)
		return errors.New(msg)
	}
	m, err := w.a.o.Volumes.SetupPod(ctx, w.pod, objs)
	if err != nil {
		w.a.event(w.pod, v1.EventTypeWarning, "FailedMount", "Unable to attach or mount volumes: %v", err)
		msg := "volume setup: " + err.Error()
		w.markAllWaiting("ContainerCreating", msg)
		return errors.New(msg)
	}
	w.mounts, w.volumesReady = m, true
	return nil
}

func (w *worker) markAllWaiting(reason, msg string) {
	for _, c := range allContainers(w.pod) {
		w.setWaiting(c.Name, reason, msg)
	}
}

// emptyDirMounts makes emptyDir volumes as plain directories under
// StateDir when no volume manager is wired (medium Memory is not honoured).
func (w *worker) emptyDirMounts() (map[string][]*runtimeapi.Mount, error) {
	if w.a.o.StateDir == "" {
		return nil, errors.New("volumes not available: no state dir for emptyDir")
	}
	dirs := map[string]string{}
	for _, v := range w.pod.Spec.Volumes {
		d := filepath.Join(w.a.podDir(w.pod.UID), "volumes", "kubernetes.io~empty-dir", v.Name)
		if err := os.MkdirAll(d, 0o777); err != nil {
			return nil, err
		}
		_ = os.Chmod(d, 0o777)
		dirs[v.Name] = d
	}
	out := map[string][]*runtimeapi.Mount{}
	for _, c := range allContainers(w.pod) {
		for _, vm := range c.VolumeMounts {
			d, ok := dirs[vm.Name]
			if !ok {
				return nil, fmt.Errorf("container %s mounts unknown volume %q", c.Name, vm.Name)
			}
			host := d
			if vm.SubPath != "" {
				host = filepath.Join(d, filepath.Clean("/"+vm.SubPath))
				if err := os.MkdirAll(host, 0o777); err != nil {
					return nil, err
				}
			}
			out[c.Name] = append(out[c.Name], &runtimeapi.Mount{ContainerPath: vm.MountPath, HostPath: host, Readonly: vm.ReadOnly})
		}
	}
	return out, nil
}

// startContainer pulls the image, creates and starts container c, registers
// it with the prober and runs its postStart hook.
// targetID, for an ephemeral container with a target, is the container
// whose PID namespace it joins.
func (w *worker) startContainer(ctx context.Context, sandboxID string, sbCfg *runtimeapi.PodSandboxConfig, podIPs []string, c *v1.Container, st *PodStatusObserved, targetID string) error {
	prev := st.latest(c.Name)
	attempt := uint32(0)
	if prev != nil {
		attempt = prev.Attempt + 1
	}
	img, err := w.ensureImage(ctx, c, sbCfg)
	if err != nil {
		return err
	}
	objs, err := w.podObjects(ctx)
	if err != nil {
		w.configError(c.Name, err)
		return err
	}
	services, err := w.serviceEnv()
	if err != nil {
		w.configError(c.Name, err)
		return err
	}
	mounts := w.mounts[c.Name]
	if hm, err := w.hostsMount(c, podIPs); err != nil {
		w.configError(c.Name, err)
		return err
	} else if hm != nil {
		mounts = append(slices.Clip(mounts), hm)
	}
	p := containerParams{
		Attempt:  attempt,
		ImageRef: img.GetId(),
		Env: envContext{
			PodIPs: podIPs, HostIPs: w.a.nodeIPs, Objects: objs, Node: w.a.nodeAllocatable, Services: services,
		},
		Mounts:     mounts,
		NodeMemory: w.a.nodeAllocatable.Memory().Value(),
		TargetID:   targetID,
		ImageUser:  img.GetUsername(),
		UserNS:     sbCfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions(),
	}
	if p.ImageRef == "" {
		p.ImageRef = c.Image
	}
	if img.GetUid() != nil {
		uid := img.GetUid().Value
		p.ImageUID = &uid
	}
	if w.a.o.StateDir != "" && c.TerminationMessagePath != "" {
		f := filepath.Join(w.a.podDir(w.pod.UID), "containers", c.Name, strconv.FormatUint(uint64(attempt), 10))
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err == nil {
			if err := os.WriteFile(f, nil, 0o666); err == nil {
				_ = os.Chmod(f, 0o666)
				p.TerminationMessageHostPath = f
			}
		}
	}
	cfg, err := makeContainerConfig(w.pod, c, p)
	if err != nil {
		w.configError(c.Name, err)
		return err
	}
	_ = os.MkdirAll(filepath.Join(sbCfg.LogDirectory, c.Name), 0o755)
	id, err := w.a.o.Runtime.CreateContainer(ctx, sandboxID, cfg, sbCfg)
	if err != nil {
		w.setWaiting(c.Name, "CreateContainerError", err.Error())
		w.a.event(w.pod, v1.EventTypeWarning, "Failed", "Error: %v", err)
		return err
	}
	w.a.event(w.pod, v1.EventTypeNormal, "Created", "Created container: %s", c.Name)
	if err := w.a.o.Runtime.StartContainer(ctx, id); err != nil {
		w.setWaiting(c.Name, "RunContainerError", err.Error())
		w.a.event(w.pod, v1.EventTypeWarning, "Failed", "Error: %v", err)
		return err
	}
	w.a.event(w.pod, v1.EventTypeNormal, "Started", "Started container %s", c.Name)
	w.log().Info("Started container", "container", c.Name, "containerID", id, "attempt", attempt)
	w.clearWaiting(c.Name)
	if prev != nil {
		if prev.exited() {
			w.a.backOff.Next(backOffKey(w.pod, c), prev.FinishedAt)
		}
		w.a.metrics.restarts.WithLabelValues(w.pod.Namespace, w.pod.Name, c.Name).Inc()
	}
	podIP := ""
	if len(podIPs) > 0 {
		podIP = podIPs[0]
	}
	if pr := w.a.o.Prober; pr != nil {
		pr.AddContainer(w.pod, c, id, podIP)
		w.mu.Lock()
		w.probed[id] = true
		w.mu.Unlock()
	}
	if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
		if err := runHook(ctx, w.a.o.Runtime, c.Lifecycle.PostStart, id, c, podIP, time.Duration(gracePeriod(w.pod))*time.Second); err != nil {
			msg := fmt.Sprintf("PostStartHook failed: %v", err)
			w.log().Info("FailedPostStartHook: killing container", "container", c.Name, "error", err)
			_ = w.stopContainer(ctx, id, c.Name, gracePeriod(w.pod))
			w.setWaiting(c.Name, "PostStartHookError", msg)
			return errors.New(msg)
		}
	}
	return nil
}

// ensureImage makes the image of c present per its pull policy and returns
// its status. Failures set the container's waiting reason.
func (w *worker) ensureImage(ctx context.Context, c *v1.Container, sbCfg *runtimeapi.PodSandboxConfig) (*runtimeapi.Image, error) {
	images := w.a.o.Images
	spec := &runtimeapi.ImageSpec{Image: c.Image, UserSpecifiedImage: c.Image}
	resp, err := images.ImageStatus(ctx, spec, false)
	if err != nil {
		w.setWaiting(c.Name, "ErrImageInspect", err.Error())
		return nil, err
	}
	present := resp.GetImage()
	switch {
	case c.ImagePullPolicy == v1.PullNever && present == nil:
		msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
		w.setWaiting(c.Name, "ErrImageNeverPull", msg)
		return nil, errors.New(msg)
	case c.ImagePullPolicy != v1.PullAlways && present != nil:
		w.a.event(w.pod, v1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
		return present, nil
	}
	key := "pull_" + string(w.pod.UID) + "_" + c.Image
	w.mu.Lock()
	failedAt, failed := w.pullFailedAt[c.Image]
	w.mu.Unlock()
	if failed {
		if until, _, ok := w.a.backOff.Get(key, failedAt); ok && w.a.clock.Now().Before(until) {
			msg := fmt.Sprintf("Back-off pulling image %q", c.Image)
			w.setWaiting(c.Name, "ImagePullBackOff", msg)
			w.a.event(w.pod, v1.EventTypeNormal, "BackOff", "%s", msg)
			w.wakeAt(until)
			return nil, errors.New(msg)
		}
	}
	w.setWaiting(c.Name, "ContainerCreating", fmt.Sprintf("Pulling image %q", c.Image))
	w.a.event(w.pod, v1.EventTypeNormal, "Pulling", "Pulling image %q", c.Image)
	pullStart := w.a.clock.Now()
	ref, err := images.PullImage(ctx, spec, nil, sbCfg)
	if err != nil {
		now := w.a.clock.Now()
		w.a.backOff.Next(key, now)
		w.mu.Lock()
		w.pullFailedAt[c.Image] = now
		w.mu.Unlock()
		msg := fmt.Sprintf("Failed to pull image %q: %v", c.Image, err)
		w.setWaiting(c.Name, "ErrImagePull", msg)
		w.a.event(w.pod, v1.EventTypeWarning, "Failed", "%s", msg)
		return nil, errors.New(msg)
	}
	w.a.backOff.Reset(key)
	w.a.event(w.pod, v1.EventTypeNormal, "Pulled", "Successfully pulled image %q in %s", c.Image, w.a.clock.Now().Sub(pullStart).Round(time.Millisecond))
	w.mu.Lock()
	delete(w.pullFailedAt, c.Image)
	w.mu.Unlock()
	resp, err = images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref}, false)
	if err == nil && resp.GetImage() != nil {
		return resp.GetImage(), nil
	}
	return &runtimeapi.Image{Id: ref}, nil
}

// killContainer runs the preStop hook of c, then stops it with what is
// left of grace seconds.
func (w *worker) killContainer(ctx context.Context, c *ContainerObserved, grace int64, reason string) error {
	if c == nil {
		return nil
	}
	return killObserved(ctx, w.a, w.pod, c, grace, w)
}

func (w *worker) stopContainer(ctx context.Context, id, name string, grace int64) error {
	err := w.a.o.Runtime.StopContainer(ctx, id, max(grace, minGracePeriod))
	if pr := w.a.o.Prober; pr != nil {
		pr.RemoveContainer(w.pod.UID, name)
	}
	w.mu.Lock()
	delete(w.liveFailed, id)
	delete(w.probed, id)
	w.mu.Unlock()
	return err
}

// killObserved stops one running container: preStop (from the spec, or
// from the container's annotation when the spec is gone), then StopContainer
// with the remaining grace. pod may be a stand-in built from labels.
func killObserved(ctx context.Context, a *Agent, pod *v1.Pod, c *ContainerObserved, grace int64, w *worker) error {
	if !c.running() && c.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		return nil
	}
	start := a.clock.Now()
	spec := findContainer(pod, c.Name)
	var preStop *v1.LifecycleHandler
	if spec != nil && spec.Lifecycle != nil {
		preStop = spec.Lifecycle.PreStop
	} else if spec == nil {
		preStop = preStopFromAnnotation(ctx, a, c.ID)
	}
	if preStop != nil && c.running() && grace > 0 {
		podIP := ""
		if resp, err := a.o.Runtime.PodSandboxStatus(ctx, c.SandboxID, false); err == nil && resp.GetStatus().GetNetwork() != nil {
			podIP = resp.Status.Network.Ip
		}
		if err := runHook(ctx, a.o.Runtime, preStop, c.ID, spec, podIP, time.Duration(grace)*time.Second); err != nil {
			klog.InfoS("PreStop hook failed", "pod", klog.KObj(pod), "container", c.Name, "error", err)
		}
	}
	remaining := grace - int64(a.clock.Now().Sub(start)/time.Second)
	if w != nil {
		return w.stopContainer(ctx, c.ID, c.Name, remaining)
	}
	return a.o.Runtime.StopContainer(ctx, c.ID, max(remaining, minGracePeriod))
}

func preStopFromAnnotation(ctx context.Context, a *Agent, id string) *v1.LifecycleHandler {
	resp, err := a.o.Runtime.ContainerStatus(ctx, id, false)
	if err != nil || resp.GetStatus() == nil {
		return nil
	}
	s := resp.Status.Annotations[annotationPreStopHandler]
	if s == "" {
		return nil
	}
	var h v1.LifecycleHandler
	if json.Unmarshal([]byte(s), &h) != nil {
		return nil
	}
	return &h
}

// killPod stops every running container (regular ones first, in
// parallel, then sidecars and init containers) and every ready sandbox.
func (w *worker) killPod(ctx context.Context, st *PodStatusObserved, _ bool) error {
	return killPodContainers(ctx, w.a, w.pod, st, w)
}

func killPodContainers(ctx context.Context, a *Agent, pod *v1.Pod, st *PodStatusObserved, w *worker) error {
	grace := gracePeriod(pod)
	if w != nil {
		w.mu.Lock()
		if w.deletionGrace != nil {
			grace = *w.deletionGrace
		}
		if f := w.failure; f != nil && f.grace != nil && *f.grace < grace {
			grace = *f.grace
		}
		w.mu.Unlock()
	}
	isInit := map[string]bool{}
	for _, c := range pod.Spec.InitContainers {
		isInit[c.Name] = true
	}
	var errs []error
	var mu sync.Mutex
	for _, initPhase := range []bool{false, true} {
		var wg sync.WaitGroup
		for _, c := range st.Containers {
			if isInit[c.Name] != initPhase || (!c.running() && c.State != runtimeapi.ContainerState_CONTAINER_CREATED) {
				continue
			}
			wg.Add(1)
			go func(c *ContainerObserved) {
				defer wg.Done()
				if w != nil && c.running() {
					a.event(pod, v1.EventTypeNormal, "Killing", "Stopping container %s", c.Name)
				}
				if err := killObserved(ctx, a, pod, c, grace, w); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("stop container %s: %w", c.Name, err))
					mu.Unlock()
				}
			}(c)
		}
		wg.Wait()
	}
	for _, sb := range st.Sandboxes {
		if !sb.Ready {
			continue
		}
		if err := a.o.Runtime.StopPodSandbox(ctx, sb.ID); err != nil {
			errs = append(errs, fmt.Errorf("stop sandbox %s: %w", sb.ID, err))
		}
	}
	return errors.Join(errs...)
}

// terminatePod stops the pod; with remove it also removes its sandboxes,
// tears its volumes down and forgets its files.
func (w *worker) terminatePod(ctx context.Context, remove bool) error {
	st, err := w.observeFresh(ctx)
	if err != nil {
		return err
	}
	w.log().Info("Terminating pod", "remove", remove)
	// Stopping takes up to the grace period; meanwhile the status keeps
	// following the containers and their readiness probes (a container
	// that stops being ready while it shuts down must show it, as with
	// the kubelet).
	stopRefresh := w.refreshStatusWhileStopping(ctx)
	err = w.killPod(ctx, st, true)
	stopRefresh()
	if err != nil {
		return err
	}
	// The final status shows the containers terminated: in node mode it
	// is written before the pod is deleted (a finalizer may keep the pod
	// around, with this status, for all to see).
	if st2, err := w.observeFresh(ctx); err == nil {
		w.updateStatus(st2)
	}
	if pr := w.a.o.Prober; pr != nil {
		pr.RemovePod(w.pod.UID)
	}
	if !remove {
		return nil
	}
	var errs []error
	for _, sb := range st.Sandboxes {
		if err := w.a.o.Runtime.StopPodSandbox(ctx, sb.ID); err != nil && sb.Ready {
			errs = append(errs, err)
		}
		if err := w.a.o.Runtime.RemovePodSandbox(ctx, sb.ID); err != nil {
			errs = append(errs, fmt.Errorf("remove sandbox %s: %w", sb.ID, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if cg := w.a.o.Cgroups; cg != nil {
		// Best effort: what stays (a process the runtime did not reap) is
		// retried as an orphan by the housekeeping.
		if err := cg.RemovePod(w.pod); err != nil {
			w.log().V(2).Info("Pod cgroup not removed yet", "error", err)
		}
	}
	if v := w.a.o.Volumes; v != nil && len(w.pod.Spec.Volumes) > 0 {
		if err := v.TeardownPod(ctx, w.pod); err != nil {
			return fmt.Errorf("volume teardown: %w", err)
		}
	}
	// Its sandboxes are gone: so is every process in its user namespace.
	w.a.userns.release(w.pod.UID)
	if w.a.o.StateDir != "" {
		_ = os.RemoveAll(w.a.podDir(w.pod.UID))
	}
	w.a.metrics.forgetPod(w.pod)
	return nil
}

// gc removes dead containers beyond the newest MaxPerPodContainer of each
// container name, with their log files, as the kubelet's container GC does
// per evict unit (pod UID, container name); and old sandboxes that hold no
// container any more. The running container does not count. The newest
// attempt of a name always stays: the next attempt number (restartCount)
// and lastState are read from the CRI, where the kubelet has its status
// cache. A dead container is one created and not started (a failed start)
// or exited; one in unknown state is left to the runtime.
func (w *worker) gc(ctx context.Context, st *PodStatusObserved) {
	rt := w.a.o.Runtime
	remove := deadContainersToRemove(st.Containers, w.a.o.MaxPerPodContainer)
	kept := map[string]bool{}
	for _, c := range st.Containers {
		if !remove[c] || !w.removeDeadContainer(ctx, c) {
			kept[c.SandboxID] = true
		}
	}
	for i, sb := range st.Sandboxes {
		if i == 0 || sb.Ready || kept[sb.ID] {
			continue
		}
		if err := rt.RemovePodSandbox(ctx, sb.ID); err != nil {
			w.log().V(2).Info("Removing old sandbox failed", "sandbox", sb.ID, "error", err)
		}
	}
}

// deadContainersToRemove decides gc's removals: of cs (newest first per
// name), the dead containers beyond the newest limit of each name, never
// the newest attempt; limit < 0 keeps all.
func deadContainersToRemove(cs []*ContainerObserved, limit int) map[*ContainerObserved]bool {
	out := map[*ContainerObserved]bool{}
	seen := map[string]bool{}
	dead := map[string]int{}
	for _, c := range cs {
		newest := !seen[c.Name]
		seen[c.Name] = true
		if !c.exited() && c.State != runtimeapi.ContainerState_CONTAINER_CREATED {
			continue
		}
		dead[c.Name]++
		if !newest && limit >= 0 && dead[c.Name] > limit {
			out[c] = true
		}
	}
	return out
}

// removeDeadContainer removes container c and its log file, and tells
// whether it is gone. The log goes too because the runtime leaves it
// (peapod's and containerd's RemoveContainer both do): the kubelet's
// removeContainerLog. Its path is the CRI's, else the one the agent gave.
func (w *worker) removeDeadContainer(ctx context.Context, c *ContainerObserved) bool {
	rt := w.a.o.Runtime
	logDir := podLogDir(w.a.o.PodLogsDir, w.pod)
	logPath := filepath.Join(logDir, c.Name, fmt.Sprintf("%d.log", c.Attempt))
	termPath := ""
	if resp, err := rt.ContainerStatus(ctx, c.ID, false); err == nil && resp.GetStatus() != nil {
		// Only a path in the pod's own log dir: the runtime's answer is
		// not trusted to name a file the agent may delete.
		if p := filepath.Clean(resp.Status.GetLogPath()); strings.HasPrefix(p, logDir+string(filepath.Separator)) {
			logPath = p
		}
		// The termination message file the agent made for it, in the
		// pod's state dir.
		if p := resp.Status.GetAnnotations()[annotationTerminationMsgHostPath]; p != "" && w.a.o.StateDir != "" &&
			strings.HasPrefix(p, w.a.podDir(w.pod.UID)+string(filepath.Separator)) {
			termPath = p
		}
	}
	if err := rt.RemoveContainer(ctx, c.ID); err != nil {
		w.log().V(2).Info("Removing dead container failed", "container", c.Name, "containerID", c.ID, "attempt", c.Attempt, "error", err)
		return false
	}
	w.log().V(2).Info("Removed dead container", "container", c.Name, "containerID", c.ID, "attempt", c.Attempt, "log", logPath)
	for _, p := range []string{logPath, termPath} {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			w.log().Info("Removing the file of a removed container failed", "container", c.Name, "containerID", c.ID, "path", p, "error", err)
		}
	}
	w.mu.Lock()
	delete(w.termMessages, c.ID)
	w.mu.Unlock()
	return true
}

// terminationMessage is the message of an exited container: the CRI's, else
// the file mounted at terminationMessagePath, else (FallbackToLogsOnError,
// failed) the tail of its log.
func (w *worker) terminationMessage(co *ContainerObserved, s *runtimeapi.ContainerStatus, spec *v1.Container) string {
	w.mu.Lock()
	msg, ok := w.termMessages[co.ID]
	w.mu.Unlock()
	if ok {
		return msg
	}
	msg = s.Message
	if msg == "" {
		if p := s.Annotations[annotationTerminationMsgHostPath]; p != "" {
			msg = readTail(p, 4096, 0)
		}
	}
	if msg == "" && co.ExitCode != 0 && s.Annotations[annotationTerminationMsgPolicy] == string(v1.TerminationMessageFallbackToLogsOnError) && s.LogPath != "" {
		msg = criLogTail(s.LogPath, 80, 2048)
	}
	w.mu.Lock()
	w.termMessages[co.ID] = msg
	w.mu.Unlock()
	return msg
}

// readTail reads at most max bytes from the end of a file.
func readTail(path string, maxBytes int64, _ int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-maxBytes, 0)
	buf := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(buf, off)
	return string(buf[:n])
}

// criLogTail returns the message part of the last lines of a CRI-format log.
func criLogTail(path string, lines int, maxBytes int64) string {
	raw := readTail(path, 64<<10, 0)
	all := strings.Split(strings.TrimRight(raw, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	var b strings.Builder
	for _, l := range all {
		// <time> <stream> <P|F> <msg>
		parts := strings.SplitN(l, " ", 4)
		if len(parts) == 4 {
			b.WriteString(parts[3])
			if parts[2] != "P" {
				b.WriteByte('\n')
			}
		}
	}
	s := b.String()
	if int64(len(s)) > maxBytes {
		s = s[int64(len(s))-maxBytes:]
	}
	return s
}

// updateStatus recomputes the cached pod status.
func (w *worker) updateStatus(st *PodStatusObserved) {
	w.mu.Lock()
	defer w.mu.Unlock()
	info := statusInfo{
		Waiting:     w.waiting,
		HostIPs:     w.a.nodeIPs,
		FirstSeen:   w.firstSeen,
		Message:     w.podError,
		RuntimeName: w.a.o.RuntimeName,
	}
	if f := w.failure; f != nil {
		info.FailedReason, info.FailedMessage, info.FailedConditions = f.reason, f.message, f.conditions
	}
	w.status = computePodStatus(w.pod, st, info)
	w.statusKnown = true
}

// podStatus is the last computed status.
func (w *worker) podStatus() v1.PodStatus {
	s, _ := w.knownStatus()
	return s
}

// knownStatus is the last computed status and whether there is one yet.
func (w *worker) knownStatus() (v1.PodStatus, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return *w.status.DeepCopy(), w.statusKnown
}

// podObjects are the ConfigMaps, Secrets and claims the pod may refer to:
// the manifest directory's for a static pod, the API server's for a pod
// from there.
func (w *worker) podObjects(ctx context.Context) (*Objects, error) {
	cs := w.a.cluster
	if cs == nil || cs.o.Objects == nil || isStaticPod(w.pod) {
		return w.a.currentObjects(), nil
	}
	objs, err := cs.o.Objects.Objects(ctx, w.pod)
	if err != nil {
		return nil, fmt.Errorf("objects of pod %s/%s: %w", w.pod.Namespace, w.pod.Name, err)
	}
	return objs, nil
}

// serviceEnv are the service-link variables in node mode (none without
// an API server: there are no Services).
func (w *worker) serviceEnv() ([]v1.EnvVar, error) {
	cs := w.a.cluster
	if cs == nil || cs.o.Objects == nil {
		return nil, nil
	}
	return cs.o.Objects.ServiceEnv(w.pod)
}

func isStaticPod(p *v1.Pod) bool {
	return p.Annotations[annotationConfigSource] == "file"
}

// killingMessage is the Killing event's message in the kubelet's words.
func killingMessage(k containerToKill) string {
	switch k.Reason {
	case "failed liveness probe", "failed startup probe":
		return fmt.Sprintf("Container %s %s, will be restarted", k.Name, k.Reason)
	case "container spec changed":
		return fmt.Sprintf("Container %s definition changed, will be restarted", k.Name)
	}
	return fmt.Sprintf("Stopping container %s", k.Name)
}

// killGrace is how long a killed container gets: the failed probe's own
// terminationGracePeriodSeconds when it sets one, as the kubelet does,
// else the pod's.
func killGrace(pod *v1.Pod, k containerToKill) int64 {
	spec := findContainer(pod, k.Name)
	var p *v1.Probe
	switch {
	case spec == nil:
	case k.Reason == "failed liveness probe":
		p = spec.LivenessProbe
	case k.Reason == "failed startup probe":
		p = spec.StartupProbe
	}
	if p != nil && p.TerminationGracePeriodSeconds != nil {
		return *p.TerminationGracePeriodSeconds
	}
	return gracePeriod(pod)
}

// configError marks container name as unable to get a config, with the
// kubelet's Warning Failed event "Error: <err>".
func (w *worker) configError(name string, err error) {
	w.setWaiting(name, "CreateContainerConfigError", err.Error())
	w.a.event(w.pod, v1.EventTypeWarning, "Failed", "Error: %v", err)
}

// refreshStatusWhileStopping re-reads the pod's state each sync period
// until the returned func is called.
func (w *worker) refreshStatusWhileStopping(ctx context.Context) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(w.a.syncPeriod)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if st, err := observePod(ctx, w.a, w.pod, w); err == nil {
				w.updateStatus(st)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// release frees what a pod that ran its course holds besides its
// containers, as the kubelet's SyncTerminatedPod does: its volumes (a
// memory-backed emptyDir's pages are the node's memory until unmounted)
// and, once no sandbox runs, its cgroup. The containers stay for their
// logs and the status until the pod is removed. It reports whether all
// is released; what failed is tried again on the next sync.
func (w *worker) release(ctx context.Context, st *PodStatusObserved) bool {
	if w.released {
		return true
	}
	if v := w.a.o.Volumes; v != nil && len(w.pod.Spec.Volumes) > 0 {
		if err := v.TeardownPod(ctx, w.pod); err != nil {
			w.log().V(2).Info("Releasing the volumes of a finished pod failed; retrying", "error", err)
			return false
		}
	}
	if cg := w.a.o.Cgroups; cg != nil {
		for _, sb := range st.Sandboxes {
			if sb.Ready {
				// Its pause (and the pod IP) stay until the pod is removed.
				w.released = true
				return true
			}
		}
		if err := cg.RemovePod(w.pod); err != nil {
			w.log().V(2).Info("Removing the cgroup of a finished pod failed; retrying", "error", err)
			return false
		}
	}
	w.released = true
	return true
}
