package oci

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// ErrExecTimeout is returned (wrapped) by ExecSync when its timeout fired;
// the exec'd process has been killed.
var ErrExecTimeout = errors.New("exec timed out")

// DefaultMaxExecOutput bounds each of stdout and stderr of ExecSync when the
// caller passes no bound (CRI-O uses the same 16 MiB).
const DefaultMaxExecOutput = 16 << 20

// ExecSync runs cmd in the container and returns its output and exit code.
//
// It runs conmon in exec mode, as CRI-O does: `conmon --sync --exec
// --exec-process-spec <file>`, which runs `runtime exec --detach` as conmon's
// child (conmon is the subreaper), writes the process's output to a
// CRI-format log file and its exit code to the sync pipe. conmon does not
// wait for EOF on the process's stdio once the process has exited, so a
// background child holding stdio (`sh -c 'sleep 100 &'`) does not hold the
// call. (`runtime exec` without --detach does: runc copies stdio until EOF.)
//
// timeout (0 = none) is enforced by peapod: it kills the process and lets
// conmon reap it (conmon itself is killed if it is still there 2 s later). A timeout returns ErrExecTimeout and exit code -1.
// Each stream keeps at most maxOutput bytes (DefaultMaxExecOutput if <= 0).
func (r *Runtime) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration, maxOutput int) (stdout, stderr []byte, exitCode int32, err error) {
	if err := validID(id); err != nil {
		return nil, nil, -1, err
	}
	if len(cmd) == 0 {
		return nil, nil, -1, fmt.Errorf("container %s: exec: empty command", id)
	}
	if maxOutput <= 0 {
		maxOutput = DefaultMaxExecOutput
	}
	start := time.Now()
	proc, err := r.execProcess(id, cmd)
	if err != nil {
		return nil, nil, -1, err
	}
	bundle, err := r.bundleOf(id)
	if err != nil {
		return nil, nil, -1, err
	}
	tmp, err := os.MkdirTemp(r.dir(id), "exec-")
	if err != nil {
		return nil, nil, -1, fmt.Errorf("container %s: exec: %w", id, err)
	}
	defer os.RemoveAll(tmp)
	pb, _ := json.Marshal(proc)
	procFile := filepath.Join(tmp, "process.json")
	if err := os.WriteFile(procFile, pb, 0o600); err != nil {
		return nil, nil, -1, fmt.Errorf("container %s: exec: %w", id, err)
	}
	logFile := filepath.Join(tmp, "output.log")
	execID := filepath.Base(tmp)
	args := []string{
		"--api-version", "1",
		"-c", id, "-u", execID,
		"-r", r.path,
		"-b", bundle,
		"-p", filepath.Join(tmp, "pid"),
		"--exit-dir", tmp,
		"--socket-dir-path", tmp,
		"-l", "k8s-file:" + logFile,
		// Output beyond this is not written at all (both streams plus
		// the CRI framing of each line).
		"--log-global-size-max", strconv.Itoa(4*maxOutput + 1<<20),
		"--log-level", "warning",
		"--sync",
		"-e", "--exec-process-spec", procFile,
		"--runtime-arg", "--root=" + r.root,
	}
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return nil, nil, -1, fmt.Errorf("container %s: exec: %w", id, err)
	}
	defer syncR.Close()
	c := exec.Command(r.conmon, args...)
	c.Dir = tmp
	var conmonOut boundedBuffer
	conmonOut.max = 64 << 10
	c.Stdout, c.Stderr = &conmonOut, &conmonOut
	c.WaitDelay = time.Second // conmon's output pipe; never wait long for it
	c.ExtraFiles = []*os.File{syncW}
	c.Env = []string{"PATH=" + envPath(), "_OCI_SYNCPIPE=3"}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		syncW.Close()
		return nil, nil, -1, fmt.Errorf("container %s: exec: start conmon: %w", id, err)
	}
	syncW.Close()
	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()

	// The timeout is peapod's, not conmon's -T: conmon's timeout kills the
	// process and exits without reaping it, so a zombie is left re-parented
	// to the container's init (critest: "timeout exec process should be
	// gone"). Killed by us, the process is reaped by conmon, its parent.
	var backstop <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		backstop = t.C
	}
	var werr error
	killed := false
	select {
	case werr = <-waited:
	case <-backstop:
		killed = true
	case <-ctx.Done():
		killed = true
	}
	if killed {
		r.killExec(id, filepath.Join(tmp, "pid"))
		// conmon is the process's parent (subreaper): let it reap the
		// killed process and exit. Killed first, conmon would leave a
		// zombie behind, re-parented to the container's init, which
		// need not reap it (critest: "timeout exec process should be gone").
		select {
		case werr = <-waited:
		case <-time.After(2 * time.Second):
			_ = c.Process.Kill()
			werr = <-waited
		}
	}
	// With --sync conmon has exited: the pipe holds everything it wrote.
	_ = syncR.SetReadDeadline(time.Now().Add(time.Second))
	var msgs []syncMessage
	dec := json.NewDecoder(syncR)
	for {
		var m syncMessage
		if err := dec.Decode(&m); err != nil {
			break
		}
		msgs = append(msgs, m)
	}
	stdout, stderr, perr := readExecLog(logFile, maxOutput)
	if perr != nil {
		klog.ErrorS(perr, "Reading exec output", "id", id)
	}
	switch {
	case killed && ctx.Err() != nil:
		return stdout, stderr, -1, fmt.Errorf("container %s: exec %q: %w", id, cmd, ctx.Err())
	case killed:
		return stdout, stderr, -1, fmt.Errorf("container %s: exec %q: timed out after %v: %w", id, cmd, timeout, ErrExecTimeout)
	}
	// Messages: {"data": pid} once the process runs, then {"data": exit code}.
	// A runtime failure is {"data": -1 (or -status), "message": ...}.
	if len(msgs) == 0 {
		return stdout, stderr, -1, fmt.Errorf("container %s: exec %q: conmon reported nothing (%v): %s", id, cmd, werr, conmonSaid(conmonOut.Bytes(), tmp))
	}
	last := msgs[len(msgs)-1]
	if last.Data < 0 || (len(msgs) == 1 && last.Message != "") {
		if strings.Contains(last.Message, "timed out") {
			return stdout, stderr, -1, fmt.Errorf("container %s: exec %q: timeout %v: %w", id, cmd, timeout, ErrExecTimeout)
		}
		msg := last.Message
		if msg == "" {
			msg = lastLines(string(conmonOut.Bytes()), 3)
		}
		return stdout, stderr, -1, fmt.Errorf("container %s: %s exec %q: %s", id, r.name, cmd, cleanRuntimeMsg(msg))
	}
	if len(msgs) < 2 {
		return stdout, stderr, -1, fmt.Errorf("container %s: exec %q: conmon reported no exit code (%v): %s", id, cmd, werr, conmonSaid(conmonOut.Bytes(), tmp))
	}
	exitCode = int32(last.Data)
	klog.V(3).InfoS("ExecSync", "runtime", r.name, "id", id, "cmd", cmd, "exitCode", exitCode, "duration", time.Since(start))
	return stdout, stderr, exitCode, nil
}

// conmonSaid is the end of what an exec's conmon printed, and why it may
// have reported nothing: dir, where it writes the output and exit files,
// is on a full filesystem (it sends its own complaint to /dev/null).
func conmonSaid(out []byte, dir string) string {
	s := lastLines(string(out), 3)
	if full := noSpace(dir); full != "" {
		if s != "" {
			s += "; "
		}
		s += full
	}
	return s
}

// readExecLog splits a CRI-format log into stdout and stderr, each cut at
// max bytes. "F" lines get their newline back; "P" lines continue.
func readExecLog(path string, max int) (stdout, stderr []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	defer f.Close()
	out := boundedBuffer{max: max}
	errb := boundedBuffer{max: max}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		l, perr := ParseLogLine(sc.Bytes())
		if perr != nil {
			continue
		}
		w := &out
		if l.Stream == "stderr" {
			w = &errb
		}
		_, _ = w.Write(l.Message)
		if !l.Partial {
			_, _ = w.Write([]byte{'\n'})
		}
	}
	return out.Bytes(), errb.Bytes(), sc.Err()
}

// execProcess is the container's own process spec with cmd as its args: same
// user, env, cwd, capabilities, no-new-privileges, rlimits. oomScoreAdj is
// left out: the runtime applies the container's (already clamped) value.
func (r *Runtime) execProcess(id string, cmd []string) (*specs.Process, error) {
	bundle, err := r.bundleOf(id)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", id, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("container %s: exec: config.json: %w", id, err)
	}
	p := &specs.Process{Cwd: "/"}
	if spec.Process != nil {
		cp := *spec.Process
		p = &cp
	}
	p.Args = cmd
	p.Terminal = false
	p.ConsoleSize = nil
	p.OOMScoreAdj = nil
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	return p, nil
}

// killExec SIGKILLs the exec'd process named by the runtime's pid file.
func (r *Runtime) killExec(id, pidFile string) {
	pid, err := readPidFile(pidFile)
	if err != nil {
		return
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // already gone
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		klog.ErrorS(err, "Killing exec process", "id", id, "pid", pid)
	}
}

// boundedBuffer keeps the first max bytes written and discards the rest
// (while still consuming it, so the writer never blocks on a full pipe).
type boundedBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.buf); room > 0 {
		if len(p) < room {
			room = len(p)
		}
		b.buf = append(b.buf, p[:room]...)
	}
	return len(p), nil
}

func (b *boundedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf
}
