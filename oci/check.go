package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	if err := r.CheckVersion(ctx); err != nil {
		return err
	}
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

// Version is a binary's major.minor.patch, as its --version prints it.
type Version struct{ Major, Minor, Patch int }

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less says whether v is older than o.
func (v Version) Less(o Version) bool {
	if v.Major != o.Major {
		return v.Major < o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor < o.Minor
	}
	return v.Patch < o.Patch
}

var versionLine = regexp.MustCompile(`(?m)^(\S+) version v?(\d+)\.(\d+)(?:\.(\d+))?`)

// ParseVersion reads the first "<name> version X.Y[.Z]" line of a
// --version output: conmon, runc and crun all start so ("conmon version
// 2.1.6", "runc version 1.1.5+ds1", "crun version 1.8.1"). It returns the
// name the binary gives itself, which is what decides the minimum (a
// handler's name and path are the operator's choice).
func ParseVersion(out string) (name string, v Version, ok bool) {
	m := versionLine.FindStringSubmatch(out)
	if m == nil {
		return "", Version{}, false
	}
	v.Major, _ = strconv.Atoi(m[2])
	v.Minor, _ = strconv.Atoi(m[3])
	if m[4] != "" {
		v.Patch, _ = strconv.Atoi(m[4])
	}
	return m[1], v, true
}

// MinConmon is the oldest conmon that takes every flag peapod passes
// (container_create.go, container_exec.go), by the release each appeared
// in: --log-global-size-max 2.1.2 (it bounds ExecSync's output: every
// exec probe and ExecSync fails on anything older, an unknown option;
// 2.1.2 as re-tagged on 2022-06-16, the first tag spelled it
// --log-size-global-max), --sync 2.0.19, --persist-dir 2.0.5;
// --api-version, --exit-dir, --socket-dir-path, --leave-stdin-open,
// --exec-process-spec and --conmon-pidfile are in 2.0.0. Debian 12
// ships 2.1.6.
var MinConmon = Version{2, 1, 2}

// minConmonWhy is what MinConmon is for, for the message.
const minConmonWhy = "--log-global-size-max, which bounds exec output"

// MinRuntime is the oldest runc and crun peapod drives. peapod sets the
// "rro" mount option (recursive read-only; CRI's recursive_read_only,
// which Status advertises as RecursiveReadOnlyMounts), which runc has
// since 1.1.0 and crun since 1.4; an older one fails such a create with
// "invalid argument". runc 1.1.12 fixed CVE-2024-21626, but that is not
// the minimum: distributions backport the fix without changing the
// version (Debian 12's 1.1.5+ds1-1+deb12u1 has it). Other runtimes
// (runsc, youki) have no minimum here: the throwaway create still tells.
var MinRuntime = map[string]Version{"runc": {1, 1, 0}, "crun": {1, 4, 0}}

// debianHas is what Debian 12 ships, for the messages.
var debianHas = map[string]string{"runc": "1.1.5", "crun": "1.8.1"}

// VersionError is a binary older than peapod needs.
type VersionError struct {
	Binary, Path string
	Have, Need   Version
	Why, Fix     string
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("%s %s at %s is too old: peapod needs >= %s (%s); %s", e.Binary, e.Have, e.Path, e.Need, e.Why, e.Fix)
}

// binaryVersion runs `path --version` (10 s at most) and parses it.
func binaryVersion(ctx context.Context, path string) (string, Version, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", Version{}, false, fmt.Errorf("`%s --version`: %w: %s", path, err, lastLines(string(out), 2))
	}
	name, v, ok := ParseVersion(string(out))
	return name, v, ok, nil
}

// Version is what the runtime binary says it is; false when it does not
// print "<name> version X.Y.Z".
func (r *Runtime) Version(ctx context.Context) (Version, bool) {
	_, v, ok, err := binaryVersion(ctx, r.path)
	return v, ok && err == nil
}

// CheckVersion refuses a runc or crun older than MinRuntime (an
// *VersionError). A runtime that does not say what it is (another
// runtime, a wrapper script) is left to the throwaway create. Check
// runs it first.
func (r *Runtime) CheckVersion(ctx context.Context) error {
	name, v, ok, err := binaryVersion(ctx, r.path)
	if err != nil {
		return fmt.Errorf("oci runtime %s at %s does not run: %w; reinstall it or point runtimes.%s.path at a working one", r.name, r.path, err, r.name)
	}
	need, known := MinRuntime[name]
	if !ok || !known {
		klog.V(2).InfoS("OCI runtime version not checked", "runtime", r.name, "path", r.path, "says", name)
		return nil
	}
	if v.Less(need) {
		return &VersionError{
			Binary: name, Path: r.path, Have: v, Need: need,
			Why: `the "rro" recursive read-only mount option`,
			Fix: fmt.Sprintf("apt-get install %s (Debian 12 has %s), or point runtimes.%s.path at a newer one", name, debianHas[name], r.name),
		}
	}
	return nil
}

// FindConmon resolves conmon as New does: the configured path, else
// conmon in $PATH, else /usr/bin/conmon.
func FindConmon(configured string) (string, error) {
	if configured == "" {
		if p, err := exec.LookPath("conmon"); err == nil {
			return p, nil
		}
	}
	want := configured
	if want == "" {
		want = "/usr/bin/conmon"
	}
	p, err := exec.LookPath(want)
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, os.ErrNotExist) && configured == "":
		return "", fmt.Errorf("conmon not found in $PATH (%s) nor at %s: apt-get install conmon", envPath(), want)
	case errors.Is(err, os.ErrNotExist), errors.Is(err, exec.ErrNotFound):
		return "", fmt.Errorf("conmon %s does not exist: apt-get install conmon", want)
	case errors.Is(err, os.ErrPermission):
		return "", fmt.Errorf("conmon %s is not executable (%w): chmod 755 %s, or apt-get install --reinstall conmon", want, os.ErrPermission, want)
	}
	return "", fmt.Errorf("conmon %s: %w; apt-get install conmon", want, err)
}

// CheckConmon finds conmon as New does and checks that it takes every
// flag peapod passes (MinConmon). It returns the path and version found.
func CheckConmon(ctx context.Context, configured string) (string, Version, error) {
	path, err := FindConmon(configured)
	if err != nil {
		return "", Version{}, err
	}
	name, v, ok, err := binaryVersion(ctx, path)
	if err != nil {
		return path, Version{}, fmt.Errorf("conmon at %s does not run: %w; apt-get install --reinstall conmon", path, err)
	}
	if !ok || name != "conmon" {
		return path, Version{}, fmt.Errorf("%s does not say it is conmon (`%s --version` prints no \"conmon version X.Y.Z\"): apt-get install conmon", path, path)
	}
	if v.Less(MinConmon) {
		fix := "apt-get install conmon (Debian 12 has 2.1.6)"
		// $PATH comes first: an old self-built conmon in /usr/local/bin
		// hides the package's.
		if pkg := "/usr/bin/conmon"; configured == "" && path != pkg {
			if n, pv, ok, err := binaryVersion(ctx, pkg); err == nil && ok && n == "conmon" && !pv.Less(MinConmon) {
				fix = fmt.Sprintf("it comes first in $PATH and hides %s %s, which is new enough: remove it, or put %s first in peapod's $PATH", pkg, pv, filepath.Dir(pkg))
			}
		}
		return path, v, &VersionError{Binary: "conmon", Path: path, Have: v, Need: MinConmon, Why: minConmonWhy, Fix: fix}
	}
	return path, v, nil
}
