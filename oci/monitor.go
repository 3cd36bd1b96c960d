package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"peapod/internal/pidfd"
)

// monitor watches one container's conmon through a pidfd. conmon writes the
// exit file and then exits, so "conmon gone" means "exit file final": done
// closes then, and the id goes to Exits() unless the monitor was silenced
// (by Delete).
type monitor struct {
	done  chan struct{}
	quiet atomic.Bool
	pidfd *os.File // nil once conmon was found gone
}

// Exits delivers the id of each container whose conmon has finished (the
// process exited and the exit file is written; read it with State). Ids of
// containers found already exited when Watch is called are delivered too.
// The queue is unbounded: a slow reader delays, never loses, exits.
func (r *Runtime) Exits() <-chan string { return r.exits.ch }

// Watch (re-)arms exit monitoring for an existing container, e.g. after a
// peapod restart. It is idempotent.
func (r *Runtime) Watch(id string) error {
	if err := validID(id); err != nil {
		return err
	}
	_, err := r.arm(id)
	return err
}

// arm returns the container's monitor, creating it if needed.
func (r *Runtime) arm(id string) (*monitor, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.monitors[id]; ok {
		return m, nil
	}
	if _, err := os.Stat(r.dir(id)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("container %s: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	m := &monitor{done: make(chan struct{})}
	r.monitors[id] = m
	f, err := r.openConmon(id)
	if err != nil {
		delete(r.monitors, id)
		return nil, err
	}
	if f == nil { // conmon already gone
		if o := r.openOrphan(id); o != nil {
			klog.InfoS("conmon is gone but the container runs; watching the container's own process for its exit", "runtime", r.name, "id", id)
			m.pidfd = o
			go r.wait(id, m)
			return m, nil
		}
		klog.V(2).InfoS("conmon already exited", "runtime", r.name, "id", id)
		close(m.done)
		r.exits.push(id)
		return m, nil
	}
	m.pidfd = f
	go r.wait(id, m)
	return m, nil
}

// openOrphan opens a pidfd on the container's own init process when the
// container still runs: after its conmon died under it (killed, OOM in the
// pod's cgroup), nobody would notice it exit and it would stay RUNNING for
// ever. nil when it does not run. The pidfd is opened before the runtime
// confirms the pid is the container's, so a recycled pid cannot slip in.
func (r *Runtime) openOrphan(id string) *os.File {
	pid, err := readPidFile(filepath.Join(r.dir(id), "pid"))
	if err != nil {
		return nil
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if rs, err := r.runtimeState(ctx, id); err != nil || rs.Status != StatusRunning || rs.Pid != pid {
		unix.Close(fd)
		return nil
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:container-%d", pid))
}

// openConmon opens a pidfd on the container's conmon, or returns nil if
// conmon has exited. The pidfd is opened before the process is checked to
// be this container's conmon, so a recycled pid cannot slip in between.
func (r *Runtime) openConmon(id string) (*os.File, error) {
	pid, err := readPidFile(filepath.Join(r.dir(id), "conmon.pid"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, nil
		}
		return nil, fmt.Errorf("container %s: pidfd_open(conmon %d): %w", id, pid, err)
	}
	if !isConmonFor(pid, id) {
		unix.Close(fd)
		return nil, nil
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:conmon-%d", pid)), nil
}

// wait blocks (in Go's netpoller: a pidfd becomes readable when its process
// exits) until conmon exits or the monitor is closed.
func (r *Runtime) wait(id string, m *monitor) {
	defer close(m.done)
	for {
		r.mu.Lock()
		f := m.pidfd
		r.mu.Unlock()
		err := pidfd.Wait(f)
		f.Close()
		if err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
			klog.ErrorS(err, "Waiting for conmon", "runtime", r.name, "id", id)
		}
		if m.quiet.Load() {
			return
		}
		// conmon records the exit and then exits; if it exited (was
		// killed) first, the container may still run: wait for that.
		o := r.openOrphan(id)
		if o == nil {
			break
		}
		klog.InfoS("conmon exited under a running container; watching the container's own process for its exit", "runtime", r.name, "id", id)
		r.mu.Lock()
		m.pidfd = o
		r.mu.Unlock()
	}
	klog.V(2).InfoS("Container exited", "runtime", r.name, "id", id)
	r.exits.push(id)
}

// waitDone waits for the monitor to finish, up to d.
func (m *monitor) waitDone(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-m.done:
		return true
	case <-t.C:
		return false
	}
}

// waitConmon waits up to d for the container's conmon to exit, without
// arming a monitor (so without side effects on Exits). It reports whether
// conmon is gone.
func (r *Runtime) waitConmon(id string, d time.Duration) bool {
	r.mu.Lock()
	m := r.monitors[id]
	r.mu.Unlock()
	if m != nil {
		return m.waitDone(d)
	}
	f, err := r.conmonPidfd(id)
	if err != nil {
		return false
	}
	if f == nil {
		return true
	}
	defer f.Close()
	fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
	for deadline := time.Now().Add(d); ; {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if n > 0 {
			return true
		}
		if err != nil && err != unix.EINTR {
			return false
		}
	}
}

// forget silences and drops a container's monitor (Delete).
func (r *Runtime) forget(id string) {
	r.mu.Lock()
	m, ok := r.monitors[id]
	delete(r.monitors, id)
	var f *os.File
	if ok {
		f = m.pidfd
	}
	r.mu.Unlock()
	if ok {
		m.quiet.Store(true)
		if f != nil {
			select {
			case <-m.done:
			default:
				_ = f.SetReadDeadline(time.Now()) // unblocks rc.Read
			}
		}
	}
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: bad content %q", path, b)
	}
	return pid, nil
}

// isConmonFor tells whether pid is a conmon started for container id.
func isConmonFor(pid int, id string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
	if len(args) == 0 || !strings.Contains(filepath.Base(string(args[0])), "conmon") {
		return false
	}
	for i := 0; i+1 < len(args); i++ {
		if (string(args[i]) == "-c" || string(args[i]) == "--cid") && string(args[i+1]) == id {
			return true
		}
	}
	return false
}

// exitQueue is an unbounded FIFO in front of the Exits channel.
type exitQueue struct {
	mu   sync.Mutex
	cond *sync.Cond
	q    []string
	ch   chan string
}

func newExitQueue() *exitQueue {
	e := &exitQueue{ch: make(chan string)}
	e.cond = sync.NewCond(&e.mu)
	go e.pump()
	return e
}

func (e *exitQueue) push(id string) {
	e.mu.Lock()
	e.q = append(e.q, id)
	e.mu.Unlock()
	e.cond.Signal()
}

func (e *exitQueue) pump() {
	for {
		e.mu.Lock()
		for len(e.q) == 0 {
			e.cond.Wait()
		}
		id := e.q[0]
		e.q = e.q[1:]
		e.mu.Unlock()
		e.ch <- id
	}
}

// findConmon opens a pidfd on the conmon started for container id, found
// by its command line (its pid file not written yet), or nil.
func (r *Runtime) findConmon(id string) (*os.File, error) {
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return nil, err
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || !isConmonFor(pid, id) {
			continue
		}
		fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
		if err != nil {
			continue
		}
		if !isConmonFor(pid, id) { // the pid was recycled meanwhile
			unix.Close(fd)
			continue
		}
		return os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:conmon-%d", pid)), nil
	}
	return nil, nil
}

// processGroupOf is the process group of pid (field 5 of its stat), or 0.
func processGroupOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count from its ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 {
		return 0
	}
	pgrp, _ := strconv.Atoi(f[2])
	return pgrp
}

// pidOfPidfd is the pid a pidfd refers to ("Pid:" of its fdinfo), or 0.
func pidOfPidfd(f *os.File) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", f.Fd()))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, _ := strconv.Atoi(strings.TrimSpace(v))
			return pid
		}
	}
	return 0
}

// conmonPidfd opens a pidfd on the container's conmon by its pid file, or,
// before conmon wrote it (it does once the runtime's create returned: a
// create that hangs leaves none), by its command line; nil when gone.
func (r *Runtime) conmonPidfd(id string) (*os.File, error) {
	f, err := r.openConmon(id)
	if err != nil || f != nil {
		return f, err
	}
	return r.findConmon(id)
}
