package oci

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/klog/v2"

	"peapod/internal/cgroupfs"
)

// Check answers whether this runtime can run containers on this host.
//
// How: the first call creates a throwaway container with the runtime alone
// (`runtime create`, no conmon, never started) — an empty rootfs with the
// host's /usr, /bin, /lib* bind-mounted read-only so the runtime finds its
// /bin/true, its own mount/ipc/uts namespaces and a cgroup
// /peapod-check-<pid>-<time> — then deletes it with `runtime delete
// --force`. Creating is enough to hit the runtime's cgroup setup, which is
// where Debian's crun 1.8.1 refuses this machine's hybrid v1+v2 layout
// ("cgroups in hybrid mode not supported, drop all controllers from
// cgroupv2"); that message is in the returned error.
//
// The answer (success or failure) is cached for the life of the Runtime:
// what it probes (kernel, cgroup layout, binaries) does not change while
// peapod runs. A probe cut short by ctx is not cached.
func (r *Runtime) Check(ctx context.Context) error {
	r.checkMu.Lock()
	defer r.checkMu.Unlock()
	if r.checkDone {
		return r.checkErr
	}
	start := time.Now()
	err := r.probe(ctx)
	if ctx.Err() != nil {
		return err
	}
	r.checkDone, r.checkErr = true, err
	klog.InfoS("Checked OCI runtime", "runtime", r.name, "path", r.path, "ok", err == nil, "err", err, "duration", time.Since(start))
	return err
}

func (r *Runtime) probe(ctx context.Context) error {
	r.sweepStaleChecks(ctx)
	tmp, err := os.MkdirTemp(r.stateDir, ".check-")
	if err != nil {
		return fmt.Errorf("oci runtime %s: check: %w", r.name, err)
	}
	defer os.RemoveAll(tmp)
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return fmt.Errorf("oci runtime %s: check: %w", r.name, err)
	}
	id := fmt.Sprintf("peapod-check-%d-%d", os.Getpid(), time.Now().UnixNano())
	spec := checkSpec(id)
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(tmp, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("oci runtime %s: check: %w", r.name, err)
	}
	logFile := filepath.Join(tmp, "runtime.log")
	errFile, err := os.Create(filepath.Join(tmp, "stderr"))
	if err != nil {
		return fmt.Errorf("oci runtime %s: check: %w", r.name, err)
	}
	defer errFile.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// stdio are files or /dev/null, never pipes: the created container's
	// init inherits them and lives until the delete below.
	cmd := exec.CommandContext(cctx, r.path, "--root", r.root, "--log", logFile, "--log-format", "json",
		"create", "--bundle", tmp, "--pid-file", filepath.Join(tmp, "pid"), id)
	cmd.Stderr = errFile
	cmd.Dir = tmp
	cerr := cmd.Run()
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := r.run(dctx, id, "delete", nil, "delete", "--force", id); err != nil && !isNotExist(err) {
			klog.ErrorS(err, "Deleting check container", "runtime", r.name, "id", id)
		}
		// The runtime removes the cgroup on delete; a failed create may leave it.
		cgroupfs.Remove(spec.Linux.CgroupsPath)
	}()
	if cerr != nil {
		msg := runtimeLogErrors(logFile, 3)
		if msg == "" {
			b, _ := os.ReadFile(errFile.Name())
			msg = lastLines(string(b), 3)
		}
		return fmt.Errorf("oci runtime %s cannot run containers on this host: %s: %w", r.name, msg, cerr)
	}
	return nil
}

func checkSpec(id string) *specs.Spec {
	mounts := []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}}}
	for _, d := range []string{"/usr", "/bin", "/lib", "/lib64", "/lib32", "/libx32"} {
		if _, err := os.Stat(d); err == nil {
			mounts = append(mounts, specs.Mount{Destination: d, Type: "bind", Source: d, Options: []string{"rbind", "ro", "nosuid", "nodev"}})
		}
	}
	return &specs.Spec{
		// crun 1.8.1 refuses any ociVersion not starting with "1.0"
		// ("unknown version specified"); runc takes either.
		Version:  "1.0.2",
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Hostname: "peapod-check",
		Process: &specs.Process{
			Args:            []string{"/bin/true"},
			Env:             []string{"PATH=/usr/bin:/bin"},
			Cwd:             "/",
			NoNewPrivileges: true,
		},
		Mounts: mounts,
		Linux: &specs.Linux{
			CgroupsPath: "/" + id,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.MountNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.PIDNamespace},
			},
			MaskedPaths: []string{"/proc/kcore"},
		},
	}
}

// sweepStaleChecks removes check containers whose peapod is gone: killed
// while its check ran, it left a created container (a `runc init` waiting
// forever) and its cgroup. Their name carries the pid that made them.
func (r *Runtime) sweepStaleChecks(ctx context.Context) {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/peapod-check-*")
	unified, _ := filepath.Glob("/sys/fs/cgroup/peapod-check-*")
	seen := map[string]bool{}
	for _, d := range append(dirs, unified...) {
		id := filepath.Base(d)
		var pid int
		var stamp int64
		if _, err := fmt.Sscanf(id, "peapod-check-%d-%d", &pid, &stamp); err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its peapod still runs; it cleans up itself
		}
		if !seen[id] {
			seen[id] = true
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_, _ = r.run(dctx, id, "delete", nil, "delete", "--force", id)
			cancel()
			// Made by another runtime root (or no state at all): the
			// processes in a check cgroup are only ever its init.
			if data, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil {
				for _, f := range strings.Fields(string(data)) {
					if p, err := strconv.Atoi(f); err == nil && p > 0 {
						_ = syscall.Kill(p, syscall.SIGKILL)
					}
				}
			}
		}
		for i := 0; i < 20; i++ {
			if err := os.Remove(d); err == nil || os.IsNotExist(err) {
				klog.V(2).InfoS("Removed a stale check container", "cgroup", d)
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
}
