package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"peapod/internal/atomicfile"
	"peapod/internal/cgroupfs"
)

// CreateOptions describe one container to create.
type CreateOptions struct {
	ID        string
	Bundle    string // dir with config.json (written by the caller) and rootfs already in place
	LogPath   string // CRI-format log file written by conmon (k8s-file)
	Terminal  bool
	Stdin     bool
	StdinOnce bool
	// ConmonCgroup, if set, is the cgroupfs path conmon is moved into once
	// the container is created (CRI-O's conmon_cgroup = "pod": the pod's
	// cgroup pays for its monitors, and a service manager stopping peapod's
	// own cgroup does not take the monitors with it).
	ConmonCgroup string
}

// syncMessage is what conmon (--api-version 1) writes to _OCI_SYNCPIPE: the
// container pid once `runtime create` returned, or -1 and the runtime's
// complaint.
type syncMessage struct {
	Data    int    `json:"data"`
	Message string `json:"message,omitempty"`
}

// Create starts conmon, which runs `runtime create`; it returns the
// container's init pid once conmon reports it on the sync pipe. conmon
// daemonizes and keeps the container's stdio, logs and exit code; it is not
// a child of peapod after this returns.
func (r *Runtime) Create(ctx context.Context, o CreateOptions) (pid int, err error) {
	start := time.Now()
	id := o.ID
	if err := validID(id); err != nil {
		return 0, err
	}
	bundle, err := filepath.Abs(o.Bundle)
	if err != nil {
		return 0, fmt.Errorf("container %s: bundle: %w", id, err)
	}
	if _, err := os.Stat(filepath.Join(bundle, "config.json")); err != nil {
		return 0, fmt.Errorf("container %s: bundle: %w", id, err)
	}
	if o.LogPath == "" {
		return 0, fmt.Errorf("container %s: no log path", id)
	}
	dir := r.dir(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return 0, fmt.Errorf("container %s: already exists in %s", id, dir)
		}
		return 0, fmt.Errorf("container %s: %w", id, err)
	}
	defer func() {
		if err != nil {
			// Delete is idempotent: runtime delete --force, conmon gone, dir removed.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if derr := r.Delete(dctx, id); derr != nil {
				klog.ErrorS(derr, "Cleanup after failed create", "runtime", r.name, "id", id)
			}
		}
	}()
	if err := os.Mkdir(filepath.Join(dir, "exits"), 0o700); err != nil {
		return 0, fmt.Errorf("container %s: %w", id, err)
	}
	mb, _ := json.Marshal(meta{Bundle: bundle, LogPath: o.LogPath, Created: time.Now(), ConmonCgroup: o.ConmonCgroup})
	if err := atomicfile.WriteFile(filepath.Join(dir, "meta.json"), mb, 0o600); err != nil {
		return 0, fmt.Errorf("container %s: %w", id, err)
	}

	args := []string{
		"--api-version", "1",
		"-c", id, "-u", id, "-n", id,
		"-r", r.path,
		"-b", bundle,
		"-p", filepath.Join(dir, "pid"),
		"--conmon-pidfile", filepath.Join(dir, "conmon.pid"),
		"--exit-dir", filepath.Join(dir, "exits"),
		"--persist-dir", dir,
		"--socket-dir-path", dir,
		"-l", "k8s-file:" + o.LogPath,
		"--log-level", "warning",
		"--runtime-arg", "--root=" + r.root,
		"--runtime-arg", "--log=" + filepath.Join(dir, "runtime.log"),
		"--runtime-arg", "--log-format=json",
	}
	if o.Terminal {
		args = append(args, "-t")
	}
	if o.Stdin {
		args = append(args, "-i")
		if !o.StdinOnce {
			args = append(args, "--leave-stdin-open")
		}
	}
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("container %s: sync pipe: %w", id, err)
	}
	defer syncR.Close()
	logf, err := os.OpenFile(filepath.Join(dir, "conmon.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		syncW.Close()
		return 0, fmt.Errorf("container %s: %w", id, err)
	}
	defer logf.Close()
	cmd := exec.Command(r.conmon, args...)
	cmd.Dir = dir
	// Stdout/stderr are a file, never a pipe: conmon daemonizes and its
	// child keeps them open for the container's life.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{syncW} // fd 3
	cmd.Env = []string{"PATH=" + envPath(), "_OCI_SYNCPIPE=3"}
	// Own process group: a ^C to peapod's group must not reach conmon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		syncW.Close()
		return 0, fmt.Errorf("container %s: start conmon: %w", id, err)
	}
	syncW.Close()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	msg, err := readSync(ctx, syncR, r.createTimeout)
	if err != nil {
		return 0, fmt.Errorf("container %s: conmon: %w%s", id, err, r.createErrDetail(id))
	}
	if msg.Data <= 0 {
		detail := msg.Message
		if rl := runtimeLogErrors(filepath.Join(dir, "runtime.log"), 3); rl != "" {
			detail = rl
		}
		return 0, fmt.Errorf("container %s: %s create: %s", id, r.name, detail)
	}
	select { // conmon's first process exits once it has daemonized
	case werr := <-waited:
		if werr != nil {
			klog.V(2).InfoS("conmon parent exited with error", "id", id, "err", werr)
		}
	case <-time.After(2 * time.Second):
	}
	if o.ConmonCgroup != "" {
		cpid, err := readPidFile(filepath.Join(dir, "conmon.pid"))
		if err != nil {
			return 0, fmt.Errorf("container %s: conmon pid: %w", id, err)
		}
		if err := cgroupfs.Join(o.ConmonCgroup, cpid, 0); err != nil {
			return 0, fmt.Errorf("container %s: conmon cgroup %s: %w", id, o.ConmonCgroup, err)
		}
	}
	if _, err := r.arm(id); err != nil {
		return 0, fmt.Errorf("container %s: watch: %w", id, err)
	}
	klog.V(2).InfoS("Created container", "runtime", r.name, "id", id, "pid", msg.Data, "duration", time.Since(start))
	return msg.Data, nil
}

// readSync reads conmon's one-line json from the sync pipe, giving up when
// ctx ends or after max.
func readSync(ctx context.Context, f *os.File, max time.Duration) (*syncMessage, error) {
	deadline := time.Now().Add(max)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = f.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()
	var msg syncMessage
	if err := json.NewDecoder(f).Decode(&msg); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("no answer on sync pipe within %v", max)
		}
		return nil, fmt.Errorf("reading sync pipe: %w", err)
	}
	return &msg, nil
}

// createErrDetail is what conmon and the runtime wrote about a failed create.
func (r *Runtime) createErrDetail(id string) string {
	s := runtimeLogErrors(filepath.Join(r.dir(id), "runtime.log"), 3)
	if b, err := os.ReadFile(filepath.Join(r.dir(id), "conmon.log")); err == nil {
		if l := lastLines(string(b), 3); l != "" {
			if s != "" {
				s += "; "
			}
			s += "conmon: " + l
		}
	}
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

// Start runs `runtime start`: the container's process execs its command.
func (r *Runtime) Start(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	// The process execs during `runtime start`: the time before the call is
	// the closest we have to its start (never after its finish).
	now := time.Now()
	if _, err := r.run(ctx, id, "start", nil, "start", id); err != nil {
		if isNotExist(err) {
			return fmt.Errorf("%w: %w", err, ErrNotFound)
		}
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(r.dir(id), "started"), []byte(now.Format(time.RFC3339Nano)), 0o600); err != nil {
		klog.ErrorS(err, "Recording start time", "id", id)
	}
	klog.V(2).InfoS("Started container", "runtime", r.name, "id", id)
	return nil
}

func envPath() string {
	if p := os.Getenv("PATH"); p != "" {
		return p
	}
	return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}
