// Package infra starts and watches a pod's infra (pause) process without an
// OCI runtime: peapod itself clones it into the pod's namespaces. A pause
// needs no image, no mounts and no devices, so `runc create` + `start`
// under conmon (~40 ms and one conmon per pod on this machine kind) buys it
// nothing; CRI-O's drop_infra_ctr / pinns reached the same conclusion.
//
// The namespaces are made on a locked OS thread: it unshares UTS and IPC,
// sets the hostname and joins the pinned netns, then forks the pause,
// which inherits that thread's namespaces (plus a new PID namespace from
// clone). Sysctls are written later (SetSysctls), once CNI has set up the
// pod's interfaces. Both run on internal/nsthread's locked threads, which
// move back to the daemon's namespaces afterwards.
//
// The pause confines itself on start (sandbox/pause) and reports ready:
// chroot into an empty read-only dir, switch to the pod's user, drop every
// capability (and the bounding set when that user is root), no_new_privs,
// not dumpable.
package infra

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"peapod/internal/nsthread"
	"peapod/internal/pidfd"
)

// ErrGone says the process is not running (or its pid now names another
// process).
var ErrGone = errors.New("pause process is gone")

// Options describe one pause process.
type Options struct {
	Path string   // the pause binary
	Args []string // argv after the path, before the confinement flags (e.g. "pause")
	Root string   // empty dir the pause chroots into

	NetNS    string // pinned netns to join; "" keeps the host's
	NewUTS   bool
	Hostname string // set in the new UTS namespace
	NewIPC   bool
	NewPID   bool // the pause is PID 1 of a new PID namespace

	UID, GID uint32
	Groups   []uint32
}

// Process is a running (or finished) pause.
type Process struct {
	Pid       int
	StartTime uint64 // /proc/<pid>/stat field 22: with Pid, names this process across pid reuse

	pidfd *os.File
	child bool // our child: reap it
	done  chan struct{}
	ready *os.File // read end of the pause's ready pipe, until Start returns
}

// Start clones the pause into its namespaces and returns once it runs.
func Start(o Options) (*Process, error) {
	if o.Path == "" || o.Root == "" {
		return nil, errors.New("infra: pause path and root are required")
	}
	var p *Process
	err := nsthread.Run(unix.CLONE_NEWUTS|unix.CLONE_NEWIPC|unix.CLONE_NEWNET, func() error {
		var err error
		p, err = startOnThread(o)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := p.awaitReady(); err != nil {
		_ = p.Stop(0)
		return nil, err
	}
	return p, nil
}

// readyTimeout bounds the wait for the pause to confine itself; it takes
// ~2 ms here (~5 ms as root, which also drops its bounding set).
const readyTimeout = 10 * time.Second

// awaitReady reads the pause's one-line report ("ok", or what failed) from
// its ready pipe: a pause that could not confine itself is an error of
// RunPodSandbox, not a sandbox that dies a moment later.
func (p *Process) awaitReady() error {
	defer p.ready.Close()
	_ = p.ready.SetReadDeadline(time.Now().Add(readyTimeout))
	line, err := bufio.NewReader(p.ready).ReadString('\n')
	switch {
	case strings.TrimSpace(line) == "ok":
		return nil
	case line != "":
		return fmt.Errorf("pause %d: %s", p.Pid, strings.TrimSpace(line))
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("pause %d: not ready after %v", p.Pid, readyTimeout)
	default:
		return fmt.Errorf("pause %d exited before it was ready (%v)", p.Pid, err)
	}
}

func startOnThread(o Options) (*Process, error) {
	var flags int
	if o.NewUTS {
		flags |= unix.CLONE_NEWUTS
	}
	if o.NewIPC {
		flags |= unix.CLONE_NEWIPC
	}
	if flags != 0 {
		if err := unix.Unshare(flags); err != nil {
			return nil, fmt.Errorf("unshare uts/ipc: %w", err)
		}
	}
	if o.NewUTS && o.Hostname != "" {
		if err := unix.Sethostname([]byte(o.Hostname)); err != nil {
			return nil, fmt.Errorf("sethostname %q: %w", o.Hostname, err)
		}
	}
	if o.NetNS != "" {
		fd, err := unix.Open(o.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open netns %s: %w", o.NetNS, err)
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("join netns %s: %w", o.NetNS, err)
		}
	}

	args := append([]string{o.Path}, o.Args...)
	args = append(args, "-root", o.Root, "-user", fmt.Sprintf("%d:%d", o.UID, o.GID))
	if len(o.Groups) > 0 {
		gs := make([]string, len(o.Groups))
		for i, g := range o.Groups {
			gs[i] = strconv.FormatUint(uint64(g), 10)
		}
		args = append(args, "-groups", strings.Join(gs, ","))
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyW.Close()
	args = append(args, "-ready-fd", "3")
	cmd := &exec.Cmd{
		Path:       o.Path,
		Args:       args,
		Env:        []string{},
		Dir:        "/",
		ExtraFiles: []*os.File{readyW},
		// Own session: a signal to peapod's process group never reaches a
		// pod, and the pause outlives peapod (no Pdeathsig).
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if o.NewPID {
		cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWPID
	}
	if err := cmd.Start(); err != nil {
		readyR.Close()
		return nil, fmt.Errorf("start pause %s: %w", o.Path, err)
	}
	readyW.Close() // the pause holds the only write end now
	pid := cmd.Process.Pid
	// Our own pidfd and wait4 from here on; os.Process keeps one of its own.
	_ = cmd.Process.Release()
	p, err := open(pid, 0, true)
	if err != nil {
		readyR.Close()
		_ = unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil)
		return nil, err
	}
	p.ready = readyR
	return p, nil
}

// Adopt watches a pause started by an earlier peapod (not our child any
// more). It returns ErrGone if pid has exited or now names another process.
func Adopt(pid int, startTime uint64) (*Process, error) {
	if pid <= 0 || startTime == 0 {
		return nil, ErrGone
	}
	return open(pid, startTime, false)
}

// open takes a pidfd first and checks the start time after, so a pid
// recycled in between is caught.
func open(pid int, want uint64, child bool) (*Process, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, ErrGone
		}
		return nil, fmt.Errorf("pidfd_open(%d): %w", pid, err)
	}
	f := os.NewFile(uintptr(fd), "pidfd:pause-"+strconv.Itoa(pid))
	st, err := StartTimeOf(pid)
	if err != nil || (want != 0 && st != want) {
		f.Close()
		if child {
			return nil, fmt.Errorf("pause %d: start time: %w", pid, err)
		}
		return nil, ErrGone
	}
	p := &Process{Pid: pid, StartTime: st, pidfd: f, child: child, done: make(chan struct{})}
	go p.wait()
	return p, nil
}

// wait parks in Go's netpoller until the pidfd turns readable (the process
// exited), then reaps it if it is our child.
func (p *Process) wait() {
	defer close(p.done)
	_ = pidfd.Wait(p.pidfd)
	if p.child {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(p.Pid, &ws, 0, nil)
			if err != unix.EINTR {
				break
			}
		}
	}
	p.pidfd.Close()
}

// SetSysctls writes namespaced sysctls (dotted names, already validated as
// belonging to a namespace the pod owns) inside the pause's net, IPC and
// UTS namespaces. It runs after CNI ADD, so a sysctl of the pod's eth0
// exists to be set. The thread enters them through the pidfd (one setns,
// no pid reuse race) and moves back afterwards.
func (p *Process) SetSysctls(sysctls map[string]string) error {
	if len(sysctls) == 0 {
		return nil
	}
	return nsthread.Run(unix.CLONE_NEWUTS|unix.CLONE_NEWIPC|unix.CLONE_NEWNET, func() error {
		return p.inNamespaces(func() error {
			for k, v := range sysctls {
				// /proc/sys resolves net, ipc and uts entries in the
				// namespaces of the thread that opens them: this one.
				if err := os.WriteFile(SysctlPath(k), []byte(v), 0); err != nil {
					return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
				}
			}
			return nil
		})
	})
}

// inNamespaces runs fn on the calling (locked) thread after it joined the
// pause's net, IPC and UTS namespaces.
func (p *Process) inNamespaces(fn func() error) error {
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return fmt.Errorf("pause %d: %w", p.Pid, ErrGone)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.Setns(int(fd), unix.CLONE_NEWNET|unix.CLONE_NEWIPC|unix.CLONE_NEWUTS)
	}); err != nil {
		return fmt.Errorf("pause %d: %w", p.Pid, ErrGone)
	}
	if serr != nil {
		return fmt.Errorf("pause %d: join its namespaces: %w", p.Pid, serr)
	}
	return fn()
}

// Done is closed once the process has exited (and was reaped, if ours).
func (p *Process) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Signal sends sig through the pidfd; an exited process is not an error.
func (p *Process) Signal(sig syscall.Signal) error {
	if !p.Running() {
		return nil
	}
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return nil // closed: it exited
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), sig, nil, 0)
	}); err != nil {
		return nil
	}
	if serr != nil && !errors.Is(serr, unix.ESRCH) {
		return fmt.Errorf("signal pause %d: %w", p.Pid, serr)
	}
	return nil
}

// Stop sends SIGTERM (the pause exits on it at once), then SIGKILL after
// timeout, and waits for the exit.
func (p *Process) Stop(timeout time.Duration) error {
	if err := p.Signal(unix.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	if err := p.Signal(unix.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("pause %d did not exit after SIGKILL", p.Pid)
	}
}

// StartTimeOf reads field 22 of /proc/<pid>/stat (clock ticks after boot).
func StartTimeOf(pid int) (uint64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return 0, err
	}
	// comm (field 2) may hold spaces and parens: fields count from the last ')'.
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	fields := strings.Fields(line[i+1:])
	const startTimeField = 22 - 3 // fields[0] is field 3 (state)
	if len(fields) <= startTimeField {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	return strconv.ParseUint(fields[startTimeField], 10, 64)
}

// SysctlPath maps a dotted sysctl name to its /proc/sys file. A slash in the
// name stands for a dot inside one path element (an interface such as
// "eth0.100"), as sysctl(8) writes it.
func SysctlPath(name string) string {
	return "/proc/sys/" + strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, name)
}
