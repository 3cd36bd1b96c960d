package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
// It runs `runtime exec --process <file> --pid-file <file>` directly (not
// conmon --exec): the runtime hands our pipes straight to the process and
// waits for it, so peapod controls the stdio and the timeout. When the
// timeout fires the process is SIGKILLed through a pidfd. Once the process
// has exited, output still buffered in the pipes is drained for a moment
// and the pipes are closed, so a background child that keeps stdio open
// (`sh -c 'sleep 100 &'`) cannot hold the call. Each stream keeps at most
// maxOutput bytes (DefaultMaxExecOutput if <= 0); the rest is discarded.
// A timeout (0 = none) returns ErrExecTimeout with exit code -1.
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
	pidFile := filepath.Join(tmp, "pid")
	logFile := filepath.Join(tmp, "runtime.log")

	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, -1, fmt.Errorf("container %s: exec: %w", id, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, nil, -1, fmt.Errorf("container %s: exec: %w", id, err)
	}
	c := exec.Command(r.path, "--root", r.root, "--log", logFile, "--log-format", "json",
		"exec", "--process", procFile, "--pid-file", pidFile, id)
	c.Stdout, c.Stderr = outW, errW // *os.File: handed to the process as is, no copier goroutines
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return nil, nil, -1, fmt.Errorf("container %s: exec: start %s: %w", id, r.name, err)
	}
	outW.Close()
	errW.Close()
	var wg sync.WaitGroup
	var outBuf, errBuf boundedBuffer
	outBuf.max, errBuf.max = maxOutput, maxOutput
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(&outBuf, outR) }()
	go func() { defer wg.Done(); _, _ = io.Copy(&errBuf, errR) }()
	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()

	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	var werr error
	timedOut := false
	select {
	case werr = <-waited:
	case <-timer:
		timedOut = true
	case <-ctx.Done():
		timedOut = true
	}
	if timedOut {
		r.killExec(id, pidFile, c)
		select {
		case werr = <-waited:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			werr = <-waited
		}
	}
	// The process is gone; whatever it wrote is in the pipes. Drain that,
	// then stop reading even if a background child still holds the write ends.
	deadline := time.Now().Add(100 * time.Millisecond)
	_ = outR.SetReadDeadline(deadline)
	_ = errR.SetReadDeadline(deadline)
	wg.Wait()
	outR.Close()
	errR.Close()
	stdout, stderr = outBuf.Bytes(), errBuf.Bytes()

	if timedOut {
		if ctx.Err() != nil {
			return stdout, stderr, -1, fmt.Errorf("container %s: exec %q: %w", id, cmd, ctx.Err())
		}
		return stdout, stderr, -1, fmt.Errorf("container %s: exec %q: timeout %v: %w", id, cmd, timeout, ErrExecTimeout)
	}
	// The runtime exits with the process's status; a failure of the runtime
	// itself shows as an error line in its log.
	if msg := runtimeLogErrors(logFile, 3); msg != "" {
		return stdout, stderr, -1, fmt.Errorf("container %s: %s exec: %s", id, r.name, msg)
	}
	var ee *exec.ExitError
	switch {
	case werr == nil:
		exitCode = 0
	case errors.As(werr, &ee):
		exitCode = int32(ee.ExitCode())
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			exitCode = 128 + int32(ws.Signal())
		}
	default:
		return stdout, stderr, -1, fmt.Errorf("container %s: exec: %w", id, werr)
	}
	klog.V(3).InfoS("ExecSync", "runtime", r.name, "id", id, "cmd", cmd, "exitCode", exitCode, "duration", time.Since(start))
	return stdout, stderr, exitCode, nil
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
func (r *Runtime) killExec(id, pidFile string, c *exec.Cmd) {
	pid, err := readPidFile(pidFile)
	if err != nil {
		// The runtime has not forked the process yet: kill the runtime.
		klog.V(2).InfoS("Exec timed out before the process started; killing the runtime", "id", id, "err", err)
		_ = c.Process.Kill()
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
