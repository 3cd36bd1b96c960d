package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Container status values.
const (
	StatusCreated = "created"
	StatusRunning = "running"
	StatusStopped = "stopped"
	StatusUnknown = "unknown"
)

// ExitCodeUnknown is reported for a stopped container whose exit code nobody
// recorded (conmon was killed), as containerd does.
const ExitCodeUnknown = 255

// State is one container as the runtime and conmon's files see it.
type State struct {
	Status     string // StatusCreated, StatusRunning, StatusStopped, StatusUnknown
	Pid        int
	ExitCode   int32
	StartedAt  time.Time
	FinishedAt time.Time
	OOMKilled  bool
	// Message says why Status is unknown or ExitCode is ExitCodeUnknown.
	Message string
}

// runtimeState is the part of `runtime state` output peapod reads.
type runtimeState struct {
	Status  string    `json:"status"`
	Pid     int       `json:"pid"`
	Bundle  string    `json:"bundle"`
	Created time.Time `json:"created"`
}

// State reads the runtime's state first and conmon's exit file second, so a
// container that exits in between is reported stopped with its exit code.
func (r *Runtime) State(ctx context.Context, id string) (*State, error) {
	if err := validID(id); err != nil {
		return nil, err
	}
	st := &State{Status: StatusUnknown}
	rs, rerr := r.runtimeState(ctx, id)
	if rerr != nil && !errors.Is(rerr, ErrNotFound) {
		return nil, rerr
	}
	_, derr := os.Stat(r.dir(id))
	if rerr != nil && derr != nil {
		return nil, fmt.Errorf("container %s: %w", id, ErrNotFound)
	}
	if rs != nil {
		st.Pid = rs.Pid
		switch rs.Status {
		case "created", "creating":
			st.Status = StatusCreated
		case "running", "paused", "pausing":
			st.Status = StatusRunning
		case "stopped":
			st.Status = StatusStopped
		}
	}
	if b, err := os.ReadFile(filepath.Join(r.dir(id), "started")); err == nil {
		st.StartedAt, _ = time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	}
	code, finished, ok, err := r.readExit(id)
	if err != nil {
		return nil, err
	}
	if !ok && (st.Status == StatusStopped || rs == nil) {
		// The process is gone but the exit file is not there (yet): conmon
		// writes it right after reaping, then exits. Wait for conmon.
		if r.waitConmon(id, 2*time.Second) {
			if code, finished, ok, err = r.readExit(id); err != nil {
				return nil, err
			}
		}
	}
	switch {
	case ok:
		st.Status, st.ExitCode, st.FinishedAt = StatusStopped, code, finished
		if st.FinishedAt.Before(st.StartedAt) {
			// The exit file's mtime comes from the kernel's coarse clock
			// (a tick behind); a process that exited at once can look as
			// if it finished before it started.
			st.FinishedAt = st.StartedAt
		}
		st.OOMKilled = r.oomKilled(id, rs)
	case st.Status == StatusStopped:
		st.ExitCode = ExitCodeUnknown
		st.Message = "container stopped but conmon recorded no exit code"
		if full := noSpace(r.dir(id)); full != "" {
			st.Message += ": " + full
		}
		st.OOMKilled = r.oomKilled(id, rs)
		if st.OOMKilled {
			// conmon runs in the pod's memory cgroup: an OOM there can take
			// it too, right after the container's process, before it wrote
			// the exit file (seen with a pod at its limit). The OOM killer
			// sends SIGKILL, so the code is known: 128+9.
			st.ExitCode = 128 + int32(syscall.SIGKILL)
			st.Message = "OOM-killed; conmon was killed before it recorded the exit code"
		}
	case rs == nil:
		st.Message = fmt.Sprintf("%s does not know the container and conmon recorded no exit code", r.name)
	}
	return st, nil
}

// noSpace says why conmon may have recorded no exit code: the filesystem
// of dir, where it writes exit files, is full (no space available, as df
// counts it). Empty while there is space.
func noSpace(dir string) string {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil || fs.Bavail > 0 {
		return ""
	}
	return fmt.Sprintf("the filesystem of %s is full (%v)", dir, unix.ENOSPC)
}

// ExitRecorded reads only conmon's exit file: a container whose exit conmon
// recorded is stopped with that code, without running `runtime state` (a
// process start, ~5-10 ms). ok is false when no exit is recorded (yet):
// the container may be running, or its conmon gone without a word; callers
// that must tell those apart use State.
func (r *Runtime) ExitRecorded(id string) (st *State, ok bool, err error) {
	if err := validID(id); err != nil {
		return nil, false, err
	}
	code, finished, ok, err := r.readExit(id)
	if err != nil || !ok {
		return nil, false, err
	}
	st = &State{Status: StatusStopped, ExitCode: code, FinishedAt: finished, OOMKilled: r.oomKilled(id, nil)}
	if b, err := os.ReadFile(filepath.Join(r.dir(id), "started")); err == nil {
		st.StartedAt, _ = time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	}
	if st.FinishedAt.Before(st.StartedAt) {
		st.FinishedAt = st.StartedAt // the exit file's mtime is a tick coarse, as in State
	}
	return st, true, nil
}

// runtimeState runs `runtime state`; an unknown id is ErrNotFound.
func (r *Runtime) runtimeState(ctx context.Context, id string) (*runtimeState, error) {
	out, err := r.run(ctx, id, "state", nil, "state", id)
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("%w: %w", err, ErrNotFound)
		}
		return nil, err
	}
	var rs runtimeState
	if err := json.Unmarshal(out, &rs); err != nil {
		return nil, fmt.Errorf("container %s: %s state: %w", id, r.name, err)
	}
	return &rs, nil
}

// readExit reads conmon's exit file: the exit code, and the file's mtime as
// the finish time.
func (r *Runtime) readExit(id string) (code int32, finished time.Time, ok bool, err error) {
	p := r.exitFile(id)
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, time.Time{}, false, nil
		}
		return 0, time.Time{}, false, fmt.Errorf("container %s: exit file: %w", id, err)
	}
	code, err = parseExitFile(b)
	if err != nil {
		return 0, time.Time{}, false, fmt.Errorf("container %s: exit file %s: %w", id, p, err)
	}
	if fi, err := os.Stat(p); err == nil {
		finished = fi.ModTime()
	}
	return code, finished, true, nil
}

// parseExitFile parses conmon's exit file: the decimal exit status
// (128+signal for a killed process), no newline.
func parseExitFile(b []byte) (int32, error) {
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad exit code %q", s)
	}
	return int32(n), nil
}

// oomKilled: conmon 2.1.6 watches memory.oom_control (cgroup v1) or
// memory.events (v2) and writes an "oom" file into its persist dir (our
// state dir) and the bundle when the container's cgroup saw an OOM kill.
func (r *Runtime) oomKilled(id string, rs *runtimeState) bool {
	if _, err := os.Stat(filepath.Join(r.dir(id), "oom")); err == nil {
		return true
	}
	bundle := ""
	if rs != nil {
		bundle = rs.Bundle
	} else if m, err := r.readMeta(id); err == nil {
		bundle = m.Bundle
	}
	if bundle != "" {
		if _, err := os.Stat(filepath.Join(bundle, "oom")); err == nil {
			return true
		}
	}
	return false
}
