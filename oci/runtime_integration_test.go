package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"peapod/internal/cgroupfs"
)

func TestCreateStartExitCode(t *testing.T) {
	e := newEnv(t)
	e.run("exit3", []string{"sh", "-c", "exit 3"})
	waitExit(t, e.rt, "exit3", 10*time.Second)
	st := e.state("exit3")
	if st.Status != StatusStopped || st.ExitCode != 3 {
		t.Fatalf("state = %+v, want stopped with exit code 3", st)
	}
	if st.StartedAt.IsZero() || st.FinishedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
		t.Errorf("times: started %v finished %v", st.StartedAt, st.FinishedAt)
	}
	if st.OOMKilled {
		t.Errorf("OOMKilled for a plain exit")
	}
}

func TestCreateStartTiming(t *testing.T) {
	e := newEnv(t)
	const n = 10
	var total, creates time.Duration
	for i := 0; i < n; i++ {
		id := "true" + strconv.Itoa(i)
		b := e.bundle(id, []string{"true"})
		_ = os.MkdirAll(filepath.Dir(e.logPath(id)), 0o755)
		start := time.Now()
		if _, err := e.rt.Create(context.Background(), CreateOptions{ID: id, Bundle: b, LogPath: e.logPath(id)}); err != nil {
			t.Fatal(err)
		}
		creates += time.Since(start)
		if err := e.rt.Start(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		total += time.Since(start)
		waitExit(t, e.rt, id, 10*time.Second)
		if err := e.rt.Delete(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("create+start of busybox true: %v average over %d (create %v, start %v)", total/n, n, creates/n, (total-creates)/n)
}

func TestCreateFailureNamesRuntimeError(t *testing.T) {
	e := newEnv(t)
	b := e.bundle("bad", []string{"/no/such/binary"})
	_, err := e.rt.Create(context.Background(), CreateOptions{ID: "bad", Bundle: b, LogPath: e.logPath("bad")})
	if err == nil {
		t.Fatal("Create of a missing binary succeeded")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "bad") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("error should name the container and say what runc said: %v", err)
	}
	if _, err := os.Stat(e.rt.dir("bad")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left behind after failed create: %v", err)
	}
	if _, err := e.rt.State(context.Background(), "bad"); !isNotFound(err) {
		t.Errorf("State after failed create = %v, want ErrNotFound", err)
	}
}

func TestLogsCRIFormat(t *testing.T) {
	e := newEnv(t)
	e.run("logs", []string{"sh", "-c", "echo hello; echo oops >&2"})
	waitExit(t, e.rt, "logs", 10*time.Second)
	lines, err := readLog(e.logPath("logs"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range lines {
		if l.Partial {
			t.Errorf("partial line %+v", l)
		}
		if time.Since(l.Time) > time.Minute {
			t.Errorf("odd time %v", l.Time)
		}
		got[l.Stream] += string(l.Message)
	}
	if got["stdout"] != "hello" || got["stderr"] != "oops" {
		t.Fatalf("log = %q", got)
	}
}

func TestStopKillsAfterTimeout(t *testing.T) {
	e := newEnv(t)
	e.run("stubborn", []string{"sh", "-c", "trap '' TERM; echo ready; while true; do sleep 1; done"})
	waitLog(t, e.logPath("stubborn"), "ready", 10*time.Second)
	if st := e.state("stubborn"); st.Status != StatusRunning || st.Pid <= 0 {
		t.Fatalf("state = %+v, want running", st)
	}
	start := time.Now()
	if err := e.rt.Stop(context.Background(), "stubborn", time.Second, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("Stop with 1s timeout took %v", took)
	if took < time.Second || took > 3*time.Second {
		t.Errorf("Stop took %v, want about 1s", took)
	}
	st := e.state("stubborn")
	if st.Status != StatusStopped || st.ExitCode != 128+9 {
		t.Fatalf("state = %+v, want stopped by SIGKILL (137)", st)
	}
	// Stopping an exited container is success.
	if err := e.rt.Stop(context.Background(), "stubborn", time.Second, syscall.SIGTERM); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStopGraceful(t *testing.T) {
	e := newEnv(t)
	e.run("polite", []string{"sh", "-c", "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done"})
	waitLog(t, e.logPath("polite"), "ready", 10*time.Second)
	start := time.Now()
	if err := e.rt.Stop(context.Background(), "polite", 10*time.Second, 0); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("graceful Stop took %v", took)
	}
	if st := e.state("polite"); st.Status != StatusStopped || st.ExitCode != 0 {
		t.Fatalf("state = %+v, want stopped with 0", st)
	}
}

func TestExecSync(t *testing.T) {
	e := newEnv(t)
	e.run("execs", []string{"sleep", "1000"})
	ctx := context.Background()

	t.Run("exit code and streams", func(t *testing.T) {
		out, errb, code, err := e.rt.ExecSync(ctx, "execs", []string{"sh", "-c", "echo out; echo err >&2; exit 7"}, 10*time.Second, 0)
		if err != nil {
			t.Fatal(err)
		}
		if code != 7 || string(out) != "out\n" || string(errb) != "err\n" {
			t.Fatalf("got code %d stdout %q stderr %q", code, out, errb)
		}
	})
	t.Run("background child holds stdio", func(t *testing.T) {
		start := time.Now()
		out, _, code, err := e.rt.ExecSync(ctx, "execs", []string{"sh", "-c", "sleep 100 & echo started"}, 10*time.Second, 0)
		if err != nil || code != 0 || string(out) != "started\n" {
			t.Fatalf("got %q %d %v", out, code, err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("took %v: waited for the background child", took)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		out, _, code, err := e.rt.ExecSync(ctx, "execs", []string{"sh", "-c", "sleep 100 & echo before; sleep 50"}, time.Second, 0)
		took := time.Since(start)
		if !errors.Is(err, ErrExecTimeout) {
			t.Fatalf("err = %v, want ErrExecTimeout", err)
		}
		t.Logf("timed out exec returned after %v: %v", took, err)
		if took > 3*time.Second {
			t.Errorf("took %v", took)
		}
		if code != -1 || string(out) != "before\n" {
			t.Errorf("got code %d out %q", code, out)
		}
	})
	t.Run("max output", func(t *testing.T) {
		out, _, code, err := e.rt.ExecSync(ctx, "execs", []string{"sh", "-c", "yes 0123456789 | head -n 10000"}, 10*time.Second, 100)
		if err != nil || code != 0 {
			t.Fatal(code, err)
		}
		if len(out) != 100 {
			t.Fatalf("stdout %d bytes, want 100", len(out))
		}
	})
	t.Run("missing binary", func(t *testing.T) {
		_, _, _, err := e.rt.ExecSync(ctx, "execs", []string{"/no/such"}, 10*time.Second, 0)
		if err == nil {
			t.Fatal("exec of a missing binary succeeded")
		}
		t.Logf("error: %v", err)
	})
	t.Run("stopped container", func(t *testing.T) {
		if err := e.rt.Stop(ctx, "execs", time.Second, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := e.rt.ExecSync(ctx, "execs", []string{"true"}, 10*time.Second, 0)
		if err == nil {
			t.Fatal("exec in a stopped container succeeded")
		}
		t.Logf("error: %v", err)
	})
}

func TestUpdateResources(t *testing.T) {
	e := newEnv(t)
	e.run("upd", []string{"sleep", "1000"}, withMemory(64<<20))
	f := filepath.Join("/sys/fs/cgroup/memory", e.cgParent, "upd", "memory.limit_in_bytes")
	read := func() string {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if got := read(); got != strconv.Itoa(64<<20) {
		t.Fatalf("limit before = %s", got)
	}
	limit := int64(128 << 20)
	if err := e.rt.UpdateResources(context.Background(), "upd", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != strconv.Itoa(128<<20) {
		t.Fatalf("limit after = %s, want %d", got, 128<<20)
	}
	if err := e.rt.UpdateResources(context.Background(), "nosuch", &specs.LinuxResources{}); !isNotFound(err) {
		t.Errorf("update of unknown id = %v, want ErrNotFound", err)
	}
}

func TestReopenLog(t *testing.T) {
	e := newEnv(t)
	e.run("chatty", []string{"sh", "-c", "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.02; done"})
	log := e.logPath("chatty")
	waitLog(t, log, "line1", 10*time.Second)
	if err := os.Rename(log, log+".1"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.rt.ReopenLog(context.Background(), "chatty"); err != nil {
		t.Fatal(err)
	}
	t.Logf("ReopenLog took %v", time.Since(start))
	lines := waitLog(t, log, "line", 5*time.Second)
	old, _ := readLog(log + ".1")
	last := string(old[len(old)-1].Message)
	if string(lines[0].Message) == last {
		t.Errorf("new file starts with the old file's last line %q", last)
	}

	// While the container is stopping and after it is gone, ReopenLog must
	// answer promptly.
	done := make(chan error, 1)
	go func() { done <- e.rt.Stop(context.Background(), "chatty", time.Second, syscall.SIGKILL) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start = time.Now()
	_ = e.rt.ReopenLog(ctx, "chatty")
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("ReopenLog while stopping took %v", took)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	err := e.rt.ReopenLog(ctx, "chatty")
	if err == nil {
		t.Errorf("ReopenLog of a stopped container succeeded")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("ReopenLog of a stopped container took %v", took)
	}
	t.Logf("stopped: %v", err)
}

func TestDeleteIdempotent(t *testing.T) {
	e := newEnv(t)
	e.run("del", []string{"sleep", "1000"})
	ctx := context.Background()
	conmonPid, err := readPidFile(filepath.Join(e.rt.dir("del"), "conmon.pid"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // running, then already gone
		if err := e.rt.Delete(ctx, "del"); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if err := e.rt.Delete(ctx, "never-existed"); err != nil {
		t.Errorf("Delete of unknown id: %v", err)
	}
	if _, err := e.rt.State(ctx, "del"); !isNotFound(err) {
		t.Errorf("State after Delete = %v, want ErrNotFound", err)
	}
	if isConmonFor(conmonPid, "del") {
		t.Errorf("conmon %d still running after Delete", conmonPid)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", e.cgParent, "del")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup left after Delete: %v", err)
	}
	if err := e.rt.Stop(ctx, "del", time.Second, 0); !isNotFound(err) {
		t.Errorf("Stop after Delete = %v, want ErrNotFound", err)
	}
}

// A fresh Runtime on the same dirs (a peapod restart) sees a running
// container, re-arms its exit monitor and sees its exit code.
func TestRestartSeesContainers(t *testing.T) {
	e := newEnv(t)
	e.run("survivor", []string{"sh", "-c", "echo ready; while [ ! -e /go ]; do sleep 0.05; done; exit 5"})
	e.run("early", []string{"sh", "-c", "exit 4"})
	waitLog(t, e.logPath("survivor"), "ready", 10*time.Second)
	waitExit(t, e.rt, "early", 10*time.Second)

	rt2, err := New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := rt2.State(ctx, "survivor")
	if err != nil || st.Status != StatusRunning {
		t.Fatalf("after restart: %+v %v, want running", st, err)
	}
	if st.StartedAt.IsZero() {
		t.Errorf("after restart: no start time")
	}
	for _, id := range []string{"survivor", "early"} {
		if err := rt2.Watch(id); err != nil {
			t.Fatal(err)
		}
	}
	// An exit that happened "while peapod was down" is delivered on Watch.
	waitExit(t, rt2, "early", 5*time.Second)
	if st := mustState(t, rt2, "early"); st.Status != StatusStopped || st.ExitCode != 4 {
		t.Fatalf("early: %+v", st)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "bundles", "survivor", "rootfs", "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitExit(t, rt2, "survivor", 10*time.Second)
	if st := mustState(t, rt2, "survivor"); st.Status != StatusStopped || st.ExitCode != 5 {
		t.Fatalf("survivor: %+v", st)
	}
	if err := rt2.Watch("nosuch"); !isNotFound(err) {
		t.Errorf("Watch of unknown id = %v", err)
	}
}

func mustState(t *testing.T, rt *Runtime, id string) *State {
	t.Helper()
	st, err := rt.State(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestOOMKilled(t *testing.T) {
	e := newEnv(t)
	e.run("hog", []string{"sh", "-c", "x=$(yes 0123456789012345678901234567890123456789)"}, withMemory(16<<20))
	waitExit(t, e.rt, "hog", 60*time.Second)
	st := e.state("hog")
	t.Logf("state: %+v", st)
	if st.Status != StatusStopped || !st.OOMKilled {
		t.Fatalf("state = %+v, want stopped and OOMKilled", st)
	}
}

func TestCheck(t *testing.T) {
	e := newEnv(t)
	if err := e.rt.Check(context.Background()); err != nil {
		t.Fatalf("runc Check: %v", err)
	}
	crun, err := exec.LookPath("crun")
	if err != nil {
		t.Skip("crun not installed")
	}
	rt, err := New(Options{Name: "crun", Path: crun, Root: filepath.Join(e.dir, "crun-root"), StateDir: filepath.Join(e.dir, "crun-state")})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = rt.Check(context.Background())
	t.Logf("crun Check took %v: %v", time.Since(start), err)
	if err == nil {
		t.Skip("crun works on this host; the hybrid-cgroup refusal is not reproducible here")
	}
	if !strings.Contains(err.Error(), "cgroups in hybrid mode not supported") {
		t.Errorf("crun Check error should carry crun's reason: %v", err)
	}
	if err2 := rt.Check(context.Background()); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("second Check = %v, want the cached answer", err2)
	}
	// Only this process's checks: daemons of other packages' tests may be
	// running their own checks right now.
	leftovers, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/*/peapod-check-%d-*", os.Getpid()))
	if len(leftovers) > 0 {
		t.Errorf("check left cgroups: %v", leftovers)
	}
}

func TestStopCreatedNeverStarted(t *testing.T) {
	e := newEnv(t)
	e.create("idle", []string{"sleep", "1000"})
	if st := e.state("idle"); st.Status != StatusCreated || st.Pid <= 0 {
		t.Fatalf("state = %+v, want created", st)
	}
	if err := e.rt.Stop(context.Background(), "idle", time.Second, 0); err != nil {
		t.Fatal(err)
	}
	if st := e.state("idle"); st.Status != StatusStopped {
		t.Fatalf("state = %+v, want stopped", st)
	}
}

func TestKillDeliversSignal(t *testing.T) {
	e := newEnv(t)
	e.run("sig", []string{"sh", "-c", "trap 'exit 42' USR1; echo ready; while true; do sleep 0.05; done"})
	waitLog(t, e.logPath("sig"), "ready", 10*time.Second)
	if err := e.rt.Kill(context.Background(), "sig", syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitExit(t, e.rt, "sig", 10*time.Second)
	if st := e.state("sig"); st.ExitCode != 42 {
		t.Fatalf("state = %+v, want exit 42", st)
	}
	if err := e.rt.Kill(context.Background(), "nosuch", syscall.SIGTERM); !isNotFound(err) {
		t.Errorf("Kill of unknown id = %v, want ErrNotFound", err)
	}
}

// Kubernetes ids are 64 hex digits: the attach socket path under the state
// dir and the bundle is far beyond sun_path's 108 bytes.
func TestLongID(t *testing.T) {
	e := newEnv(t)
	id := randHex(32)
	e.run(id, []string{"sh", "-c", "echo hi; exit 2"})
	waitExit(t, e.rt, id, 10*time.Second)
	if st := e.state(id); st.ExitCode != 2 {
		t.Fatalf("state = %+v", st)
	}
	waitLog(t, e.logPath(id), "hi", time.Second)
}

// TestExecSyncCancelReaps: an ExecSync whose context ends kills the process
// and lets conmon reap it before conmon goes (critest: "timeout exec
// process should be gone").
func TestExecSyncCancelReaps(t *testing.T) {
	e := newEnv(t)
	e.run("reaped", []string{"sleep", "1000"})
	ctx := context.Background()
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, _, _, err := e.rt.ExecSync(cctx, "reaped", []string{"sleep", "7654"}, 0, 0); err == nil {
		t.Fatal("exec outlived its context")
	}
	// The container's init (sleep 1000) reaps nothing: a killed exec
	// that conmon did not reap would stay as a zombie.
	out, _, _, err := e.rt.ExecSync(ctx, "reaped", []string{"sh", "-c", "cat /proc/[0-9]*/stat"}, 10*time.Second, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "(sleep)"); n != 1 {
		t.Errorf("%d sleep processes in the container, want only its init:\n%s", n, out)
	}
}

// TestCheckSweepsStaleChecks: a peapod killed while its start-up check ran
// left a created check container (a `runc init` waiting forever) and its
// cgroup; the next check removes both.
func TestCheckSweepsStaleChecks(t *testing.T) {
	e := newEnv(t)
	dead := 0
	for p := 4194000; p > 1000; p-- {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); os.IsNotExist(err) {
			dead = p
			break
		}
	}
	id := fmt.Sprintf("peapod-check-%d-1", dead)
	bundle := filepath.Join(e.dir, "stale")
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(checkSpec(id))
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	devnull, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer devnull.Close()
	create := exec.Command(e.opts.Path, "--root", e.opts.Root, "create", "--bundle", bundle, id)
	create.Stdin, create.Stdout, create.Stderr = devnull, devnull, devnull
	if err := create.Run(); err != nil {
		t.Fatalf("runc create of the stale check: %v", err)
	}
	initPid := 0
	if data, err := os.ReadFile(fmt.Sprintf("/sys/fs/cgroup/pids/%s/cgroup.procs", id)); err == nil {
		fmt.Sscanf(string(data), "%d", &initPid)
	}
	t.Cleanup(func() { // only if the sweep failed
		exec.Command(e.opts.Path, "--root", e.opts.Root, "delete", "--force", id).Run()
		cgroupfs.Remove("/" + id)
	})
	if initPid == 0 {
		t.Fatal("the stale check container has no process")
	}
	fresh, err := New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/" + id); len(left) > 0 {
		t.Errorf("stale check cgroups left: %v", left)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", initPid))
		if err != nil || !strings.Contains(string(data), "init") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stale runc init %d still running", initPid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
