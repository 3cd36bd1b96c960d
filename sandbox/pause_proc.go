package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"peapod/internal/cgroupfs"
	"peapod/sandbox/infra"
)

// pauseStopTimeout is how long a pause gets after SIGTERM; it exits on it
// at once, so only a stuck one waits this long.
const pauseStopTimeout = 10 * time.Second

// pauseRoot is the empty, read-only dir every pause chroots into: the
// pause needs no file once it runs.
func (m *Manager) pauseRoot() string { return filepath.Join(m.o.State, "pause-root") }

func (m *Manager) makePauseRoot() error {
	dir := m.pauseRoot()
	if err := os.MkdirAll(dir, 0o555); err != nil {
		return err
	}
	return os.Chmod(dir, 0o555)
}

// watchPause records p as sb's pause and turns the sandbox NOTREADY when it
// exits on its own (a stop marks it so first).
func (m *Manager) watchPause(sb *Sandbox, p *infra.Process) {
	sb.mu.Lock()
	sb.pause = p
	sb.mu.Unlock()
	go func() {
		<-p.Done()
		m.HandleExit(sb.ID())
	}()
}

func (s *Sandbox) isRemoved() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.removed
}

func (s *Sandbox) pauseProcess() *infra.Process {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pause
}

// stopPause ends the pod's infra process and removes its cgroup.
func (m *Manager) stopPause(ctx context.Context, sb *Sandbox) error {
	rec := sb.Record()
	if rec.PauseStartTime == 0 && rec.PausePid > 0 {
		return m.stopLegacyPause(ctx, rec)
	}
	if p := sb.pauseProcess(); p != nil {
		if err := p.Stop(pauseStopTimeout); err != nil {
			return err
		}
	}
	cgroupfs.Remove(filepath.Join(rec.CgroupParent, rec.ID))
	return nil
}

// stopLegacyPause stops and deletes a pause that an older peapod ran under
// the OCI runtime.
func (m *Manager) stopLegacyPause(ctx context.Context, rec SandboxRecord) error {
	rt, err := m.runtime(rec.RuntimeHandler)
	if err != nil {
		return err
	}
	if err := rt.Stop(ctx, rec.ID, pauseStopTimeout, unix.SIGTERM); err != nil && !isGone(err) {
		return err
	}
	if err := rt.Delete(ctx, rec.ID); err != nil && !isGone(err) {
		return err
	}
	return nil
}

// adoptPause re-attaches to the pause of a sandbox found on start-up and
// reports whether it still runs.
func (m *Manager) adoptPause(ctx context.Context, sb *Sandbox) bool {
	rec := sb.Record()
	if rec.PauseStartTime == 0 {
		if rec.PausePid == 0 {
			return false
		}
		rt, err := m.runtime(rec.RuntimeHandler)
		if err != nil {
			klog.ErrorS(err, "Sandbox runtime handler gone", "id", rec.ID)
			return false
		}
		st, err := rt.State(ctx, rec.ID)
		if err != nil || st.Status != "running" {
			return false
		}
		if err := rt.Watch(rec.ID); err != nil {
			klog.ErrorS(err, "Cannot watch pause", "id", rec.ID)
		}
		return true
	}
	p, err := infra.Adopt(rec.PausePid, rec.PauseStartTime)
	if err != nil {
		if !errors.Is(err, infra.ErrGone) {
			klog.ErrorS(err, "Cannot watch pause", "id", rec.ID, "pid", rec.PausePid)
		}
		return false
	}
	m.watchPause(sb, p)
	return true
}
