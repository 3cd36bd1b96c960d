package sandbox

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/sandbox/lxcfs"
	"peapod/sandbox/spec"
)

// LXCFSOptions put lxcfs's /proc files into containers (sandbox/lxcfs).
type LXCFSOptions struct {
	// Mode is containers.lxcfs: lxcfs.ModeAuto, ModeOn or ModeOff ("" = off).
	Mode string
	// Dir is lxcfs's mount point.
	Dir string
	// Interval between two checks of lxcfs's mount (default 1 s): how long
	// reads in a container fail with ENOTCONN after lxcfs died, at most.
	Interval time.Duration
	// Timeout of one check (default 3 s): a stopped lxcfs that answers
	// nothing for this long counts as down.
	Timeout time.Duration
}

// lxcfsManager keeps every running container that wants lxcfs reading the
// live lxcfs, or its own /proc while there is none. It is a reconciler:
// each check of lxcfs's mount that finds it changed (up, down, a new FUSE
// device after a restart) starts a new generation, and every container
// not yet synced to the current generation is brought there: its mount
// table read, lxcfs.Decide, lxcfs.Sync. A container whose sync failed
// stays behind and is tried again on the next check.
type lxcfsManager struct {
	o LXCFSOptions
	w *lxcfs.Watcher

	mu    sync.Mutex
	state lxcfs.State
	gen   uint64
	// synced: container id -> the generation it matches; attached: it
	// reads lxcfs (false: its own /proc). Pruned of gone containers on
	// every pass.
	synced   map[string]uint64
	attached map[string]bool
	// failedGen: the generation a container's sync last failed in, so the
	// failure is logged once per generation, not on every check.
	failedGen map[string]uint64

	attachOK, attachErr, detachOK, detachErr atomic.Uint64
}

func newLXCFSManager(o LXCFSOptions) *lxcfsManager {
	if o.Mode == "" || o.Mode == lxcfs.ModeOff {
		return nil
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
	l := &lxcfsManager{
		o: o, w: lxcfs.NewWatcher(o.Dir, o.Timeout),
		synced: map[string]uint64{}, attached: map[string]bool{}, failedGen: map[string]uint64{},
	}
	// Known before the first container is created.
	l.observe(l.w.Check())
	return l
}

// observe records a check's result; a change starts a new generation.
func (l *lxcfsManager) observe(s lxcfs.State) (lxcfs.State, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gen == 0 || !s.Same(l.state) {
		if s.Up {
			klog.InfoS("lxcfs is up: containers get its /proc files", "dir", l.o.Dir, "dev", fmt.Sprintf("%d:%d", unix.Major(s.Dev), unix.Minor(s.Dev)), "paths", s.Paths)
		} else if l.gen == 0 {
			klog.InfoS("lxcfs is not up: containers see the host's /proc", "mode", l.o.Mode, "reason", s.Reason, "message", s.Message)
		} else {
			klog.ErrorS(nil, "lxcfs is down: containers see the host's /proc until it is back", "mode", l.o.Mode, "reason", s.Reason, "message", s.Message)
		}
		l.state = s
		l.gen++
	}
	return l.state, l.gen
}

// lxcfsOptOut reports a pod that turned lxcfs off with its annotation.
func lxcfsOptOut(cfg *runtimeapi.PodSandboxConfig) bool {
	return cfg.GetAnnotations()[lxcfs.PodAnnotation] == lxcfs.ModeOff
}

// lxcfsFor says what a new container of sb gets: lxcfs's dir and the
// paths it serves (none: its own /proc), and the generation that answer
// belongs to. Mode "on" refuses a container while lxcfs is down.
func (m *Manager) lxcfsFor(sb *Sandbox) (string, []string, uint64, error) {
	l := m.lxcfs
	if l == nil || lxcfsOptOut(sb.Config()) {
		return "", nil, 0, nil
	}
	if v, ok := sb.Config().GetAnnotations()[lxcfs.PodAnnotation]; ok && v != lxcfs.ModeOff {
		klog.V(2).InfoS("Pod annotation ignored: only \"off\" is meaningful", "sandbox", sb.Record().ID, "annotation", lxcfs.PodAnnotation, "value", v)
	}
	l.mu.Lock()
	s, gen := l.state, l.gen
	l.mu.Unlock()
	if !s.Up {
		if l.o.Mode == lxcfs.ModeOn {
			return "", nil, 0, fmt.Errorf("%w: containers.lxcfs = \"on\" and lxcfs is down (%s: %s); start lxcfs, or opt the pod out with annotation %s: \"off\"",
				ErrFailedPrecondion, s.Reason, s.Message, lxcfs.PodAnnotation)
		}
		return "", nil, gen, nil
	}
	return l.o.Dir, s.Paths, gen, nil
}

// lxcfsCreated records what a new container got at create.
func (m *Manager) lxcfsCreated(id string, gen uint64, attached bool) {
	if l := m.lxcfs; l != nil && gen != 0 {
		l.mu.Lock()
		l.synced[id], l.attached[id] = gen, attached
		l.mu.Unlock()
	}
}

// RunLXCFS checks lxcfs's mount every interval and brings the containers
// along, until ctx ends. A no-op when containers.lxcfs is off.
func (m *Manager) RunLXCFS(ctx context.Context) {
	l := m.lxcfs
	if l == nil {
		return
	}
	t := time.NewTicker(l.o.Interval)
	defer t.Stop()
	for {
		m.syncLXCFS(l.w.Check())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncLXCFS is one pass of the reconciler over every container.
func (m *Manager) syncLXCFS(checked lxcfs.State) {
	l := m.lxcfs
	s, gen := l.observe(checked)
	live := map[string]bool{}
	for _, c := range m.Containers() {
		rec := c.Record()
		if rec.Pid == 0 || (rec.State != runtimeapi.ContainerState_CONTAINER_CREATED && rec.State != runtimeapi.ContainerState_CONTAINER_RUNNING) {
			continue
		}
		live[rec.ID] = true
		l.mu.Lock()
		done := l.synced[rec.ID] == gen
		l.mu.Unlock()
		if done {
			continue
		}
		wants, attached, err := m.syncContainerLXCFS(c, rec, s)
		l.mu.Lock()
		if err != nil {
			first := l.failedGen[rec.ID] != gen
			l.failedGen[rec.ID] = gen
			l.mu.Unlock()
			// The container may just have exited; the next pass drops it.
			if first {
				klog.ErrorS(err, "lxcfs binds of a container not updated; retrying on the next check", "id", rec.ID, "lxcfsUp", s.Up)
			}
			continue
		}
		l.synced[rec.ID] = gen
		if wants {
			l.attached[rec.ID] = attached
		}
		delete(l.failedGen, rec.ID)
		l.mu.Unlock()
	}
	l.mu.Lock()
	for id := range l.synced {
		if !live[id] {
			delete(l.synced, id)
			delete(l.attached, id)
			delete(l.failedGen, id)
		}
	}
	l.mu.Unlock()
}

// syncContainerLXCFS brings one container to lxcfs state s and reports
// whether it wants lxcfs at all (its pod did not opt out) and whether it
// now reads lxcfs.
func (m *Manager) syncContainerLXCFS(c *Container, rec ContainerRecord, s lxcfs.State) (wants, attached bool, _ error) {
	sb, err := m.Sandbox(rec.SandboxID)
	if err != nil || lxcfsOptOut(sb.Config()) {
		return false, false, nil
	}
	mounts := c.Config().GetMounts()
	want := func(p string) bool { return !spec.LXCFSCovered(mounts, p) }
	t := lxcfs.Target{Pid: rec.Pid, Cgroup: rec.CgroupsPath}
	table, err := t.Mounts()
	if err != nil {
		return true, false, fmt.Errorf("container %s: %w", rec.ID, err)
	}
	plan := lxcfs.Decide(table, s, want)
	if plan.Empty() {
		return true, s.Up, nil
	}
	start := time.Now()
	err = lxcfs.Sync(t, m.lxcfs.o.Dir, plan)
	ok, bad := &m.lxcfs.attachOK, &m.lxcfs.attachErr
	if len(plan.Attach) == 0 {
		ok, bad = &m.lxcfs.detachOK, &m.lxcfs.detachErr
	}
	if err != nil {
		bad.Add(1)
		return true, false, fmt.Errorf("container %s: %w", rec.ID, err)
	}
	ok.Add(1)
	klog.InfoS("Container's lxcfs binds updated", "id", rec.ID, "detached", len(plan.Detach), "attached", len(plan.Attach), "took", time.Since(start))
	return true, s.Up, nil
}

// LXCFSStatus is lxcfs as the CRI's Status and the metrics report it.
type LXCFSStatus struct {
	// Mode is containers.lxcfs; "off": nothing else is set.
	Mode  string
	Dir   string
	State lxcfs.State
	// Attached and Detached count the live containers that want lxcfs:
	// those reading it and those reading their own /proc (lxcfs down, or
	// a sync not done yet).
	Attached, Detached int
	// Syncs of running containers' binds: attach (lxcfs's files put in,
	// after a restart) and detach (a dead lxcfs's taken off).
	AttachOK, AttachErr, DetachOK, DetachErr uint64
}

// LXCFSStatus reports lxcfs's last check and the containers' binds.
func (m *Manager) LXCFSStatus() LXCFSStatus {
	l := m.lxcfs
	if l == nil {
		return LXCFSStatus{Mode: lxcfs.ModeOff}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := LXCFSStatus{Mode: l.o.Mode, Dir: l.o.Dir, State: l.state,
		AttachOK: l.attachOK.Load(), AttachErr: l.attachErr.Load(), DetachOK: l.detachOK.Load(), DetachErr: l.detachErr.Load()}
	for id, a := range l.attached {
		if a && l.synced[id] == l.gen {
			st.Attached++
		} else {
			st.Detached++
		}
	}
	return st
}
