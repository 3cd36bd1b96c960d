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
// With a user namespace (UIDMappings) the order differs: clone makes the
// user namespace first and, inside it, new net, UTS, IPC and PID
// namespaces, so the pod's user namespace owns them; the hostname is set
// afterwards from the host, through the pause's UTS namespace. The binary
// and its root are then reached through inherited fds (/proc/self/fd/N),
// as the pause runs as the pod's mapped host root, which need not be able
// to walk peapod's dirs (e.g. a 0700 temp dir).
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
	"runtime"
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

	// UIDMappings and GIDMappings, when set, put the pause in a new user
	// namespace with them (container id → host id); NetNS must then be ""
	// (the pause makes its own netns inside it; the caller pins
	// /proc/<pid>/ns/net).
	UIDMappings, GIDMappings []syscall.SysProcIDMap
}

// Process is a running (or finished) pause.
type Process struct {
	Pid       int
	StartTime uint64 // /proc/<pid>/stat field 22: with Pid, names this process across pid reuse

	pidfd *os.File
	child bool // our child: reap it
	// userNSRoot is the host uid of the root of the pause's own user
	// namespace (0: the host's), which IPC sysctls are written as.
	userNSRoot int
	done       chan struct{}
	ready      *os.File // read end of the pause's ready pipe, until Start returns
}

// Start clones the pause into its namespaces and returns once it runs.
func Start(o Options) (*Process, error) {
	if o.Path == "" || o.Root == "" {
		return nil, errors.New("infra: pause path and root are required")
	}
	userns := len(o.UIDMappings) > 0
	if userns && o.NetNS != "" {
		return nil, errors.New("infra: a pause with its own user namespace makes its own netns (NetNS must be empty)")
	}
	var p *Process
	err := nsthread.Run(unix.CLONE_NEWUTS|unix.CLONE_NEWIPC|unix.CLONE_NEWNET, func() error {
		var err error
		if userns {
			p, err = startUserNS(o)
		} else {
			p, err = startOnThread(o)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if userns {
		p.userNSRoot = o.UIDMappings[0].HostID
	}
	if userns && o.NewUTS && o.Hostname != "" {
		err := nsthread.Run(unix.CLONE_NEWUTS, func() error {
			return p.inNamespacesOf(unix.CLONE_NEWUTS, func() error {
				if err := unix.Sethostname([]byte(o.Hostname)); err != nil {
					return fmt.Errorf("sethostname %q: %w", o.Hostname, err)
				}
				return nil
			})
		})
		if err != nil {
			p.ready.Close()
			_ = p.Stop(0)
			return nil, err
		}
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

	return spawn(o, 0, nil, nil)
}

// startUserNS forks the pause into a new user namespace with o's mappings
// and new net, UTS, IPC (as asked) and PID (as asked) namespaces inside it.
func startUserNS(o Options) (*Process, error) {
	bin, err := os.Open(o.Path)
	if err != nil {
		return nil, fmt.Errorf("open pause %s: %w", o.Path, err)
	}
	defer bin.Close()
	root, err := os.Open(o.Root)
	if err != nil {
		return nil, fmt.Errorf("open pause root %s: %w", o.Root, err)
	}
	defer root.Close()
	flags := unix.CLONE_NEWUSER | unix.CLONE_NEWNET
	if o.NewUTS {
		flags |= unix.CLONE_NEWUTS
	}
	if o.NewIPC {
		flags |= unix.CLONE_NEWIPC
	}
	return spawn(o, flags, bin, root)
}

// spawn starts the pause with clone flags (NEWPID added when o.NewPID).
// bin and root, when set, are the pause binary and its root, passed as
// fds 4 and 5 and used through /proc/self/fd.
func spawn(o Options, cloneFlags int, bin, root *os.File) (*Process, error) {
	path, rootArg := o.Path, o.Root
	if bin != nil {
		path, rootArg = "/proc/self/fd/4", "/proc/self/fd/5"
	}
	args := append([]string{o.Path}, o.Args...)
	args = append(args, "-root", rootArg, "-user", fmt.Sprintf("%d:%d", o.UID, o.GID))
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
		Path:       path,
		Args:       args,
		Env:        []string{},
		Dir:        "/",
		ExtraFiles: []*os.File{readyW},
		// Own session: a signal to peapod's process group never reaches a
		// pod, and the pause outlives peapod (no Pdeathsig).
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Cloneflags: uintptr(cloneFlags)},
	}
	if bin != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, bin, root)
	}
	if o.NewPID {
		cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWPID
	}
	if cloneFlags&unix.CLONE_NEWUSER != 0 {
		cmd.SysProcAttr.UidMappings = o.UIDMappings
		cmd.SysProcAttr.GidMappings = o.GIDMappings
		// The pause sets its supplementary groups itself.
		cmd.SysProcAttr.GidMappingsEnableSetgroups = true
		// Host root is not mapped in the new namespace: the child becomes
		// its root before exec, or it would exec as the overflow id with
		// no capabilities (and could not chroot).
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
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
			var asNSRoot map[string]string
			for k, v := range sysctls {
				if p.userNSRoot > 0 && ipcSysctl(k) {
					asNSRoot = map[string]string{k: v}
					continue
				}
				// /proc/sys resolves net, ipc and uts entries in the
				// namespaces of the thread that opens them: this one.
				if err := os.WriteFile(SysctlPath(k), []byte(v), 0); err != nil {
					return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
				}
			}
			if asNSRoot == nil {
				return nil
			}
			for k, v := range sysctls {
				if ipcSysctl(k) {
					asNSRoot[k] = v
				}
			}
			return writeAsUID(p.userNSRoot, asNSRoot)
		})
	})
}

// ipcSysctl reports whether a (validated) sysctl belongs to the IPC
// namespace: kernel.sem, kernel.shm*, kernel.msg*, fs.mqueue.*.
func ipcSysctl(k string) bool {
	return k == "kernel.sem" || strings.HasPrefix(k, "kernel.shm") || strings.HasPrefix(k, "kernel.msg") ||
		strings.HasPrefix(k, "fs.mqueue.") || strings.HasPrefix(k, "fs/mqueue/")
}

// writeAsUID writes sysctls with the calling thread's effective uid set to
// uid. The kernel opens the IPC (and mqueue) sysctls of an IPC namespace
// owned by a user namespace for writing to that namespace's root only
// (ipc_permissions looks at the euid; no capability overrides it), so host
// root writes them as the pod's mapped root. Only this thread changes uid
// (a raw setresuid, not Go's process-wide one), and it is locked once more
// than it is unlocked, so Go throws it away when its goroutine ends
// instead of reusing a thread with another euid.
func writeAsUID(uid int, sysctls map[string]string) error {
	runtime.LockOSThread()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		return fmt.Errorf("setresuid(-1, %d, -1) to write IPC sysctls: %w", uid, e)
	}
	defer unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0))
	for k, v := range sysctls {
		if err := os.WriteFile(SysctlPath(k), []byte(v), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s (as the pod's root, uid %d): %w", k, v, uid, err)
		}
	}
	return nil
}

// inNamespaces runs fn on the calling (locked) thread after it joined the
// pause's net, IPC and UTS namespaces.
func (p *Process) inNamespaces(fn func() error) error {
	return p.inNamespacesOf(unix.CLONE_NEWNET|unix.CLONE_NEWIPC|unix.CLONE_NEWUTS, fn)
}

// inNamespacesOf is inNamespaces for the namespace kinds given.
func (p *Process) inNamespacesOf(kinds int, fn func() error) error {
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return fmt.Errorf("pause %d: %w", p.Pid, ErrGone)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.Setns(int(fd), kinds)
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
