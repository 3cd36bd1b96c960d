package oci

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"peapod/internal/cgroupfs"
)

// Integration tests run real containers: they need PEAPOD_INTEGRATION=1,
// root, runc, conmon and /bin/busybox (busybox-static).

const busybox = "/bin/busybox"

func needIntegration(t *testing.T) {
	t.Helper()
	if os.Getenv("PEAPOD_INTEGRATION") != "1" {
		t.Skip("integration test: set PEAPOD_INTEGRATION=1 to run real containers (needs root, runc, conmon, busybox-static)")
	}
	if os.Geteuid() != 0 {
		t.Skip("integration test needs root")
	}
	for _, b := range []string{"runc", "conmon"} {
		if _, err := exec.LookPath(b); err != nil {
			if _, err := os.Stat("/usr/sbin/" + b); err != nil {
				t.Skipf("integration test needs %s: %v", b, err)
			}
		}
	}
	if _, err := os.Stat(busybox); err != nil {
		t.Skipf("integration test needs %s (busybox-static): %v", busybox, err)
	}
}

// env is one test's runtime plus what it must clean up.
type env struct {
	t        *testing.T
	opts     Options
	rt       *Runtime
	dir      string
	cgParent string // "/peapod-test-<random>"
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	needIntegration(t)
	dir := t.TempDir()
	runc, err := exec.LookPath("runc")
	if err != nil {
		runc = "/usr/sbin/runc"
	}
	e := &env{t: t, dir: dir, cgParent: "/peapod-test-" + randHex(4)}
	e.opts = Options{Name: "runc", Path: runc, Root: filepath.Join(dir, "root"), StateDir: filepath.Join(dir, "s")}
	e.rt, err = New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs last: after every container is deleted.
	t.Cleanup(func() { removeCgroups(t, e.cgParent) })
	return e
}

// removeCgroups removes a test's cgroup parent from every hierarchy.
func removeCgroups(t *testing.T, parent string) {
	for _, d := range cgroupfs.Dirs(parent) {
		if _, err := os.Stat(d); err != nil {
			continue
		}
		subs, _ := filepath.Glob(filepath.Join(d, "*", "cgroup.procs"))
		for _, s := range subs {
			if err := os.Remove(filepath.Dir(s)); err != nil {
				t.Errorf("cleanup: leftover cgroup %s: %v", filepath.Dir(s), err)
			}
		}
		if err := os.Remove(d); err != nil {
			t.Errorf("cleanup: cgroup %s: %v", d, err)
		}
	}
}

type ctrOpt func(*specs.Spec)

func withMemory(limit int64) ctrOpt {
	return func(s *specs.Spec) {
		s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}
	}
}

// bundle lays out a busybox rootfs and a minimal spec running args.
func (e *env) bundle(id string, args []string, opts ...ctrOpt) string {
	t := e.t
	t.Helper()
	b := filepath.Join(e.dir, "bundles", id)
	bin := filepath.Join(b, "rootfs", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.MkdirAll(filepath.Join(e.dir, "logs"), 0o755)
	for _, d := range []string{"proc", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(b, "rootfs", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "sleep", "true", "echo", "cat", "yes", "head", "touch", "stty"} {
		if err := os.Symlink("busybox", filepath.Join(bin, a)); err != nil {
			t.Fatal(err)
		}
	}
	s := &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: "rootfs"},
		Hostname: "peapod-test",
		Process: &specs.Process{
			Args:            args,
			Env:             []string{"PATH=/bin"},
			Cwd:             "/",
			NoNewPrivileges: true,
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: e.cgParent + "/" + id,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
		},
	}
	for _, o := range opts {
		o(s)
	}
	js, _ := json.MarshalIndent(s, "", "\t")
	if err := os.WriteFile(filepath.Join(b, "config.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) logPath(id string) string { return filepath.Join(e.dir, "logs", id+".log") }

// create makes a bundle and creates the container, registering its cleanup:
// Delete, then a check that its conmon is gone (killed by its own pid if
// not, which fails the test).
func (e *env) create(id string, args []string, opts ...ctrOpt) {
	e.t.Helper()
	e.createWith(CreateOptions{ID: id}, args, opts...)
}

// createWith is create with Terminal/Stdin/StdinOnce from co (the spec's
// process.terminal follows co.Terminal).
func (e *env) createWith(co CreateOptions, args []string, opts ...ctrOpt) {
	t := e.t
	t.Helper()
	id := co.ID
	if co.Terminal {
		opts = append(opts, func(s *specs.Spec) { s.Process.Terminal = true })
	}
	co.Bundle = e.bundle(id, args, opts...)
	co.LogPath = e.logPath(id)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.rt.Create(ctx, co); err != nil {
		t.Fatalf("Create: %v", err)
	}
	conmonPid, err := readPidFile(filepath.Join(e.rt.dir(id), "conmon.pid"))
	if err != nil {
		t.Fatalf("conmon pid: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.rt.Delete(ctx, id); err != nil {
			t.Errorf("cleanup: Delete %s: %v", id, err)
		}
		if isConmonFor(conmonPid, id) {
			t.Errorf("cleanup: conmon %d for %s still running after Delete; killing it", conmonPid, id)
			_ = syscall.Kill(conmonPid, syscall.SIGKILL)
		}
	})
}

func (e *env) run(id string, args []string, opts ...ctrOpt) {
	e.t.Helper()
	e.create(id, args, opts...)
	if err := e.rt.Start(context.Background(), id); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
}

// waitExit waits for id on rt's Exits channel.
func waitExit(t *testing.T, rt *Runtime, id string, d time.Duration) {
	t.Helper()
	timer := time.After(d)
	for {
		select {
		case got := <-rt.Exits():
			if got == id {
				return
			}
		case <-timer:
			t.Fatalf("no exit event for %s within %v", id, d)
		}
	}
}

func (e *env) state(id string) *State {
	e.t.Helper()
	st, err := e.rt.State(context.Background(), id)
	if err != nil {
		e.t.Fatalf("State %s: %v", id, err)
	}
	return st
}

// waitLog waits until the file at path has a line containing substr.
func waitLog(t *testing.T, path, substr string, d time.Duration) []LogLine {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		lines, _ := readLog(path)
		for _, l := range lines {
			if strings.Contains(string(l.Message), substr) {
				return lines
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(path)
			t.Fatalf("log %s: no line with %q within %v; have:\n%s", path, substr, d, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readLog(path string) ([]LogLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []LogLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l, err := ParseLogLine(append([]byte(nil), sc.Bytes()...))
		if err != nil {
			return out, err
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
