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
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Exec runs cmd in the container with streamed stdio, for the CRI streaming
// server (kubectl exec / crictl exec -i). It runs `runtime exec --process
// <file>` in the foreground:
//
//   - without tty, the runtime gets stdin/stdout/stderr as given and waits
//     for the process and for EOF on its stdio (like ssh, a background child
//     that keeps stdout open keeps the session open);
//   - with tty, the runtime's stdio is the slave side of a pty peapod
//     allocates; the runtime puts it in raw mode and copies between it and
//     the container's own pty, and forwards SIGWINCH, so a resize of the
//     outer pty reaches the container. stdout carries the terminal's output;
//     stderr is unused.
//
// It returns the process's exit code (128+signal if it was killed). If ctx
// ends first the runtime (and with it the session) is killed.
func (r *Runtime) Exec(ctx context.Context, id string, cmd []string, tty bool, stdin io.Reader, stdout, stderr io.Writer, resize <-chan Size) (int32, error) {
	if err := validID(id); err != nil {
		return -1, err
	}
	if len(cmd) == 0 {
		return -1, fmt.Errorf("container %s: exec: empty command", id)
	}
	proc, err := r.execProcess(id, cmd)
	if err != nil {
		return -1, err
	}
	proc.Terminal = tty
	tmp, err := os.MkdirTemp(r.dir(id), "exec-")
	if err != nil {
		return -1, fmt.Errorf("container %s: exec: %w", id, err)
	}
	defer os.RemoveAll(tmp)
	pb, _ := json.Marshal(proc)
	procFile := filepath.Join(tmp, "process.json")
	if err := os.WriteFile(procFile, pb, 0o600); err != nil {
		return -1, fmt.Errorf("container %s: exec: %w", id, err)
	}
	logFile := filepath.Join(tmp, "runtime.log")
	args := []string{"--root", r.root, "--log", logFile, "--log-format", "json", "exec", "--process", procFile}
	if tty {
		args = append(args, "--tty")
	}
	c := exec.Command(r.path, append(args, id)...)
	c.WaitDelay = 2 * time.Second
	start := time.Now()

	var master *os.File
	if tty {
		m, slave, err := openPty()
		if err != nil {
			return -1, fmt.Errorf("container %s: exec: %w", id, err)
		}
		master = m
		defer master.Close()
		_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80})
		c.Stdin, c.Stdout, c.Stderr = slave, slave, slave
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		err = c.Start()
		slave.Close()
		if err != nil {
			return -1, fmt.Errorf("container %s: exec: start %s: %w", id, r.name, err)
		}
		if stdin != nil {
			go func() { _, _ = io.Copy(master, stdin) }()
		}
		if resize != nil {
			// Stopped and waited for before master is closed (deferred
			// earlier, so it runs later): never an ioctl on a closed fd.
			mfd := int(master.Fd())
			stopResize := make(chan struct{})
			resized := make(chan struct{})
			defer func() { close(stopResize); <-resized }()
			go func() {
				defer close(resized)
				for {
					select {
					case <-stopResize:
						return
					case s, ok := <-resize:
						if !ok {
							return
						}
						if err := unix.IoctlSetWinsize(mfd, unix.TIOCSWINSZ, &unix.Winsize{Row: s.Height, Col: s.Width}); err != nil {
							klog.V(2).InfoS("Exec resize", "id", id, "err", err)
						}
					}
				}
			}()
		}
	} else {
		c.Stdin, c.Stdout, c.Stderr = stdin, stdout, stderr
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			return -1, fmt.Errorf("container %s: exec: start %s: %w", id, r.name, err)
		}
	}
	outDone := make(chan struct{})
	if master != nil && stdout != nil {
		go func() { defer close(outDone); _, _ = io.Copy(stdout, master) }() // ends with EIO once the slave is gone
	} else {
		close(outDone)
	}
	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()
	var werr error
	select {
	case werr = <-waited:
	case <-ctx.Done():
		_ = c.Process.Kill()
		<-waited
		return -1, fmt.Errorf("container %s: exec %q: %w", id, cmd, ctx.Err())
	}
	select { // the rest of the terminal output
	case <-outDone:
	case <-time.After(time.Second):
	}
	if msg := runtimeLogErrors(logFile, 3); msg != "" {
		return -1, fmt.Errorf("container %s: %s exec %q: %s", id, r.name, cmd, msg)
	}
	code := int32(0)
	var ee *exec.ExitError
	switch {
	case werr == nil:
	case errors.As(werr, &ee):
		code = int32(ee.ExitCode())
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int32(ws.Signal())
		}
	default:
		return -1, fmt.Errorf("container %s: exec %q: %w", id, cmd, werr)
	}
	klog.V(3).InfoS("Exec", "runtime", r.name, "id", id, "cmd", cmd, "tty", tty, "exitCode", code, "duration", time.Since(start))
	return code, nil
}

// openPty allocates a pseudo-terminal pair with /dev/ptmx (no cgo, no
// extra module for the few ioctls this takes).
func openPty() (master, slave *os.File, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("unlockpt: %w", err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("ptsname: %w", err)
	}
	name := fmt.Sprintf("/dev/pts/%d", n)
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	return os.NewFile(uintptr(mfd), "/dev/ptmx"), os.NewFile(uintptr(sfd), name), nil
}
