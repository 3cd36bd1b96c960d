package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// lxcfsd is an lxcfs this test runs on a mount point of its own, as
// `lxcfs --foreground`: its PID is the test's to stop.
type lxcfsd struct {
	t   testing.TB
	dir string
	cmd *exec.Cmd
}

func startLXCFS(t testing.TB, dir string) *lxcfsd {
	t.Helper()
	integration(t)
	if _, err := os.Stat("/usr/bin/lxcfs"); err != nil {
		t.Skip("lxcfs is not installed (make deps)")
	}
	os.MkdirAll(dir, 0o755)
	l := &lxcfsd{t: t, dir: dir}
	t.Cleanup(l.stop)
	l.start()
	return l
}

func (l *lxcfsd) start() {
	l.t.Helper()
	// --enable-cfs: cpuinfo and cpu/online follow the CPU quota, not only
	// the cpuset. The pid file is ours too (the default is /run/lxcfs.pid).
	l.cmd = exec.Command("/usr/bin/lxcfs", "--foreground", "--enable-cfs", "-p", l.dir+".pid", l.dir)
	if err := l.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if data, err := os.ReadFile(filepath.Join(l.dir, "proc/uptime")); err == nil && len(data) > 0 {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("lxcfs did not come up at %s", l.dir)
		}
	}
}

// kill9 kills lxcfs by its PID as a crash would: its FUSE mount stays,
// answering ENOTCONN.
func (l *lxcfsd) kill9() {
	if l.cmd != nil {
		l.cmd.Process.Kill()
		l.cmd.Wait()
		l.cmd = nil
	}
}

// stop ends lxcfs by its PID (SIGTERM: it unmounts itself) and unmounts
// what a killed one left, as lxcfs.service's ExecStopPost does.
func (l *lxcfsd) stop() {
	if l.cmd != nil {
		l.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { l.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			l.cmd.Process.Kill()
			<-done
		}
		l.cmd = nil
	}
	for unix.Unmount(l.dir, unix.MNT_DETACH) == nil {
	}
	os.Remove(l.dir + ".pid")
}

// execTry runs cmd in the container and returns its output and exit code,
// without failing the test on a non-zero exit.
func execTry(t *testing.T, d *daemon, id string, cmd ...string) (string, string, int32) {
	t.Helper()
	r, err := d.rt.ExecSync(d.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 10})
	if err != nil {
		t.Fatalf("ExecSync %v: %v", cmd, err)
	}
	return string(r.Stdout), string(r.Stderr), r.ExitCode
}

// eventually retries check until it returns "" or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func() string) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < timeout {
		if last = check(); last == "" {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %s", what, timeout, last)
	return 0
}

func memTotal(s string) string {
	m := regexp.MustCompile(`(?m)^MemTotal:\s+(\d+) kB$`).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return m[1]
}

func lxcfsCondition(t *testing.T, d *daemon) *runtimeapi.RuntimeCondition {
	t.Helper()
	resp, err := d.rt.Status(d.ctx(), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Status.Conditions {
		if c.Type == "LXCFSReady" {
			return c
		}
	}
	return nil
}

// limited is a container with a memory limit and half a CPU, in a PID
// namespace of its own as the kubelet gives one (no shareProcessNamespace):
// lxcfs answers from the cgroups of the init of the reader's PID
// namespace, and in the pod's namespace that is the pause.
func limited(name string, mem int64) *runtimeapi.ContainerConfig {
	cc := containerConfig(name, "sleep", "3600")
	cc.Linux = &runtimeapi.LinuxContainerConfig{
		Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: mem, CpuPeriod: 100000, CpuQuota: 50000},
		SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
			Network: runtimeapi.NamespaceMode_POD, Ipc: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER,
		}},
	}
	return cc
}

// TestLXCFS: with lxcfs, a container sees its own limits in /proc; a pod
// that opts out, and containers.lxcfs = "off", see the host's; lxcfs
// stopped: after the check's deadline new reads get the host's figures;
// lxcfs killed: after at most a check interval, reads work again and show
// the host's figures (the condition and the metric say lxcfs is down);
// lxcfs restarted (also while peapod was down): running containers read
// it again, without a restart, including one created while it was down.
func TestLXCFS(t *testing.T) {
	reg := startRegistry(t)
	lx := startLXCFS(t, filepath.Join(t.TempDir(), "lxcfs"))
	d := newDaemon(t, daemonOpts{
		mirrors: map[string]string{"docker.io": "http://" + reg}, agentDisabled: true,
		extraConfig: fmt.Sprintf("[containers]\nlxcfs = \"auto\"\nlxcfs_dir = %q\n", lx.dir),
	})
	pullBusybox(t, d)
	hostMeminfo, _ := os.ReadFile("/proc/meminfo")
	hostMem := memTotal(string(hostMeminfo))
	hostOnline, _ := os.ReadFile("/sys/devices/system/cpu/online")
	var hostUptime float64
	if data, err := os.ReadFile("/proc/uptime"); err == nil {
		hostUptime, _ = strconv.ParseFloat(strings.Fields(string(data))[0], 64)
	}

	if c := lxcfsCondition(t, d); c == nil || !c.Status {
		t.Fatalf("LXCFSReady = %v, want true", c)
	}

	podCfg := podConfig(d, "lxcfs")
	pod := runPod(t, d, podCfg)
	ctr := startContainer(t, d, pod, podCfg, limited("limited", 256<<20))

	t.Run("limits in /proc", func(t *testing.T) {
		if got := memTotal(execOut(t, d, ctr, "cat", "/proc/meminfo")); got != "262144" {
			t.Errorf("MemTotal = %s kB, want 262144 (256 MiB)", got)
		}
		// busybox free takes total, used and free from sysinfo(2), the
		// kernel's own figures that lxcfs cannot change, and only
		// "available" from /proc/meminfo; procps' free (and top) read
		// /proc/meminfo for all of them and show 256 MiB total.
		var si unix.Sysinfo_t
		unix.Sysinfo(&si)
		f := strings.Fields(strings.Split(execOut(t, d, ctr, "free", "-m"), "\n")[1])
		if len(f) != 7 || f[0] != "Mem:" {
			t.Fatalf("free -m: Mem line %v", f)
		}
		if avail, _ := strconv.Atoi(f[6]); avail > 256 || avail <= 0 {
			t.Errorf("free -m: available %s MiB, want at most 256 (from lxcfs's meminfo)", f[6])
		}
		if want := strconv.FormatUint(si.Totalram*uint64(si.Unit)>>20, 10); f[1] != want {
			t.Errorf("free -m: total %s MiB, want the host's %s (busybox reads sysinfo(2))", f[1], want)
		}
		// lxcfs --enable-cfs: half a CPU rounds up to one.
		if got := strings.TrimSpace(execOut(t, d, ctr, "cat", "/sys/devices/system/cpu/online")); got != "0" {
			t.Errorf("cpu/online = %q, want \"0\" (one CPU); the host has %q", got, strings.TrimSpace(string(hostOnline)))
		}
		if got := strings.TrimSpace(execOut(t, d, ctr, "grep", "-c", "^processor", "/proc/cpuinfo")); got != "1" {
			t.Errorf("processors in /proc/cpuinfo = %s, want 1", got)
		}
		// nproc (busybox's, coreutils', Go's runtime.NumCPU) counts
		// sched_getaffinity, which only a cpuset changes: lxcfs cannot
		// touch it. glibc's sysconf(_SC_NPROCESSORS_ONLN) reads cpu/online.
		if got := strings.TrimSpace(execOut(t, d, ctr, "nproc")); got != strconv.Itoa(runtime.NumCPU()) {
			t.Errorf("nproc = %s, want the affinity count %d", got, runtime.NumCPU())
		}
		up, err := strconv.ParseFloat(strings.Fields(execOut(t, d, ctr, "cat", "/proc/uptime"))[0], 64)
		if err != nil || up > 30 {
			t.Errorf("uptime %v (%v), want near zero for a new container (host: %.0f s)", up, err, hostUptime)
		}
	})

	t.Run("pod opts out", func(t *testing.T) {
		cfg := podConfig(d, "lxcfs-off")
		cfg.Annotations = map[string]string{"peapod.io/lxcfs": "off"}
		p := runPod(t, d, cfg)
		c := startContainer(t, d, p, cfg, limited("limited", 256<<20))
		if got := memTotal(execOut(t, d, c, "cat", "/proc/meminfo")); got != hostMem {
			t.Errorf("MemTotal = %s kB, want the host's %s", got, hostMem)
		}
		if got := execOut(t, d, c, "cat", "/sys/devices/system/cpu/online"); got != string(hostOnline) {
			t.Errorf("cpu/online = %q, want the host's %q", got, hostOnline)
		}
	})

	// shareProcessNamespace: the PID namespace's init is the pause, so
	// lxcfs answers with the pause's cgroup (the pod's), which has no
	// limit here: the host's figures.
	t.Run("shared PID namespace", func(t *testing.T) {
		cc := limited("shared", 256<<20)
		cc.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
		c := startContainer(t, d, pod, podCfg, cc)
		if got := memTotal(execOut(t, d, c, "cat", "/proc/meminfo")); got != hostMem {
			t.Errorf("MemTotal = %s kB, want the pod cgroup's (no limit: the host's %s)", got, hostMem)
		}
		if _, err := d.rt.StopContainer(d.ctx(), &runtimeapi.StopContainerRequest{ContainerId: c, Timeout: 0}); err != nil {
			t.Fatal(err)
		}
	})

	// A stopped lxcfs answers nothing: reads of its files block. After
	// the check's deadline (3 s) peapod takes it for down and takes the
	// binds off, so new reads get the host's figures; once it runs again
	// the binds go back.
	t.Run("lxcfs stopped and continued", func(t *testing.T) {
		lx.cmd.Process.Signal(syscall.SIGSTOP)
		stopped := true
		defer func() {
			if stopped {
				lx.cmd.Process.Signal(syscall.SIGCONT)
			}
		}()
		took := eventually(t, 10*time.Second, "LXCFSReady=false with lxcfs stopped", func() string {
			if c := lxcfsCondition(t, d); c == nil || c.Status || c.Reason != "LXCFSNotResponding" {
				return fmt.Sprint(c)
			}
			return ""
		})
		t.Logf("a stopped lxcfs was reported down after %s", took.Round(time.Millisecond))
		// The condition flips before the binds are off: wait for them.
		eventually(t, 3*time.Second, "binds taken off a stopped lxcfs", func() string {
			mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", containerPid(t, d, ctr)))
			if n := strings.Count(string(mi), "fuse.lxcfs"); err != nil || n != 0 {
				return fmt.Sprintf("%d lxcfs mounts left", n)
			}
			return ""
		})
		if got := memTotal(execOut(t, d, ctr, "cat", "/proc/meminfo")); got != hostMem {
			t.Errorf("MemTotal with lxcfs stopped = %s, want the host's %s", got, hostMem)
		}
		lx.cmd.Process.Signal(syscall.SIGCONT)
		stopped = false
		eventually(t, 10*time.Second, "binds back after lxcfs continued", func() string {
			if got := memTotal(execOut(t, d, ctr, "cat", "/proc/meminfo")); got != "262144" {
				return "MemTotal " + got
			}
			return ""
		})
	})

	t.Run("lxcfs killed and restarted", func(t *testing.T) {
		lx.kill9()
		// Until peapod's next check (1 s) the binds are dead: a read
		// fails with ENOTCONN, fast. Then the container reads its own
		// /proc: the host's figures.
		took := eventually(t, 5*time.Second, "reads work again after lxcfs died", func() string {
			out, stderr, code := execTry(t, d, ctr, "cat", "/proc/meminfo")
			if code != 0 {
				return fmt.Sprintf("exit %d: %s", code, stderr)
			}
			if got := memTotal(out); got != hostMem {
				return "MemTotal " + got
			}
			return ""
		})
		t.Logf("reads fell back to the host's /proc %s after lxcfs was killed", took.Round(time.Millisecond))
		if c := lxcfsCondition(t, d); c == nil || c.Status || c.Reason != "LXCFSDisconnected" || !strings.Contains(c.Message, "host's figures") {
			t.Errorf("LXCFSReady after kill = %v", c)
		}
		if m := d.metricsText(); !strings.Contains(m, `peapod_lxcfs_up{mode="auto"} 0`) || !regexp.MustCompile(`peapod_lxcfs_container_syncs_total\{action="detach",result="ok"\} [1-9]`).MatchString(m) {
			t.Errorf("metrics after kill lack lxcfs_up 0 and a detach:\n%s", grepLines(m, "peapod_lxcfs"))
		}
		// auto: a container created while lxcfs is down starts, on the
		// host's figures.
		during := startContainer(t, d, pod, podCfg, limited("during", 128<<20))
		if got := memTotal(execOut(t, d, during, "cat", "/proc/meminfo")); got != hostMem {
			t.Errorf("container created during the outage: MemTotal %s, want the host's %s", got, hostMem)
		}

		lx.stop() // unmounts the dead mount, as a supervisor's restart does
		lx.start()
		took = eventually(t, 5*time.Second, "containers read the restarted lxcfs", func() string {
			if got := memTotal(execOut(t, d, ctr, "cat", "/proc/meminfo")); got != "262144" {
				return "limited: MemTotal " + got
			}
			if got := memTotal(execOut(t, d, during, "cat", "/proc/meminfo")); got != "131072" {
				return "during: MemTotal " + got
			}
			return ""
		})
		t.Logf("containers followed the restarted lxcfs %s after it mounted", took.Round(time.Millisecond))
		up, _ := strconv.ParseFloat(strings.Fields(execOut(t, d, ctr, "cat", "/proc/uptime"))[0], 64)
		if up > 60 {
			t.Errorf("uptime after the restart %.0f s, want the container's age", up)
		}
		if c := lxcfsCondition(t, d); c == nil || !c.Status {
			t.Errorf("LXCFSReady after restart = %v", c)
		}
		m := d.metricsText()
		for _, want := range []string{`peapod_lxcfs_up{mode="auto"} 1`, `peapod_lxcfs_containers{state="attached"} 2`, `peapod_lxcfs_containers{state="detached"} 0`, `action="attach",result="error"} 0`, `action="detach",result="error"} 0`} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics after restart lack %s:\n%s", want, grepLines(m, "peapod_lxcfs"))
			}
		}
	})

	// lxcfs restarted while peapod was down (kill -9): the restored
	// daemon's first check finds the containers on the dead mount.
	t.Run("lxcfs restarted while peapod was down", func(t *testing.T) {
		d.kill9()
		lx.kill9()
		lx.stop()
		lx.start()
		d.start()
		eventually(t, 5*time.Second, "the container reads the new lxcfs after peapod's restart", func() string {
			out, stderr, code := execTry(t, d, ctr, "cat", "/proc/meminfo")
			if code != 0 {
				return fmt.Sprintf("exit %d: %s", code, stderr)
			}
			if got := memTotal(out); got != "262144" {
				return "MemTotal " + got
			}
			return ""
		})
	})
}

// TestLXCFSModes: containers.lxcfs = "on" refuses a container while lxcfs is
// down (a pod that opts out still runs); "off" gives the host's figures
// with lxcfs up.
func TestLXCFSModes(t *testing.T) {
	reg := startRegistry(t)
	lx := startLXCFS(t, filepath.Join(t.TempDir(), "lxcfs"))
	hostMeminfo, _ := os.ReadFile("/proc/meminfo")
	for _, tt := range []struct {
		mode, dir string
	}{{"on", filepath.Join(t.TempDir(), "no-lxcfs")}, {"off", lx.dir}} {
		t.Run(tt.mode, func(t *testing.T) {
			d := newDaemon(t, daemonOpts{
				mirrors: map[string]string{"docker.io": "http://" + reg}, agentDisabled: true,
				extraConfig: fmt.Sprintf("[containers]\nlxcfs = %q\nlxcfs_dir = %q\n", tt.mode, tt.dir),
			})
			pullBusybox(t, d)
			cfg := podConfig(d, "lxcfs-"+tt.mode)
			pod := runPod(t, d, cfg)
			switch tt.mode {
			case "on":
				_, err := d.rt.CreateContainer(d.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: limited("c", 256<<20), SandboxConfig: cfg})
				if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "lxcfs is down") || !strings.Contains(err.Error(), "peapod.io/lxcfs") {
					t.Fatalf("CreateContainer with lxcfs down and mode on: %v, want FailedPrecondition naming the opt-out", err)
				}
				if c := lxcfsCondition(t, d); c == nil || c.Status || c.Reason != "LXCFSNotMounted" || !strings.Contains(c.Message, "CreateContainer fails") {
					t.Errorf("LXCFSReady = %v", c)
				}
				out := grepLines(d.metricsText(), "peapod_lxcfs_up")
				if !strings.Contains(out, `peapod_lxcfs_up{mode="on"} 0`) {
					t.Errorf("metrics: %s", out)
				}
				optOut := podConfig(d, "lxcfs-on-optout")
				optOut.Annotations = map[string]string{"peapod.io/lxcfs": "off"}
				p := runPod(t, d, optOut)
				startContainer(t, d, p, optOut, limited("c", 256<<20))
			case "off":
				c := startContainer(t, d, pod, cfg, limited("c", 256<<20))
				if got, want := memTotal(execOut(t, d, c, "cat", "/proc/meminfo")), memTotal(string(hostMeminfo)); got != want {
					t.Errorf("MemTotal with lxcfs off = %s, want the host's %s", got, want)
				}
				if c := lxcfsCondition(t, d); c != nil {
					t.Errorf("LXCFSReady reported with lxcfs off: %v", c)
				}
				if m := d.metricsText(); strings.Contains(m, "peapod_lxcfs_up") {
					t.Errorf("lxcfs metrics with lxcfs off:\n%s", grepLines(m, "peapod_lxcfs"))
				}
			}
		})
	}
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// BenchmarkLXCFSPodStart: what lxcfs costs a pod start. One daemon with
// lxcfs on; each iteration starts a pod whose container gets lxcfs's eight
// binds and one that opts out (peapod.io/lxcfs: "off"), in alternating
// order, so both see the same machine; RunPodSandbox + CreateContainer +
// StartContainer over gRPC, p50 of each kind reported.
//
//	PEAPOD_INTEGRATION=1 go test -run '^$' -bench LXCFSPodStart -benchtime 20x ./test/e2e
func BenchmarkLXCFSPodStart(b *testing.B) {
	reg := startRegistry(b)
	lx := startLXCFS(b, filepath.Join(b.TempDir(), "lxcfs"))
	d := newDaemon(b, daemonOpts{
		mirrors: map[string]string{"docker.io": "http://" + reg}, agentDisabled: true,
		extraConfig: fmt.Sprintf("[containers]\nlxcfs = \"on\"\nlxcfs_dir = %q\n", lx.dir),
	})
	if _, err := d.img.PullImage(d.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: busybox}}); err != nil {
		b.Fatal(err)
	}
	start := func(name string, optOut bool) time.Duration {
		cfg := podConfig(d, name)
		if optOut {
			cfg.Annotations = map[string]string{"peapod.io/lxcfs": "off"}
		}
		cc := limited("c", 256<<20)
		t0 := time.Now()
		run, err := d.rt.RunPodSandbox(d.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			b.Fatal(err)
		}
		c, err := d.rt.CreateContainer(d.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cc, SandboxConfig: cfg})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := d.rt.StartContainer(d.ctx(), &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			b.Fatal(err)
		}
		took := time.Since(t0)
		d.rt.StopPodSandbox(d.ctx(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: run.PodSandboxId})
		if _, err := d.rt.RemovePodSandbox(d.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
			b.Fatal(err)
		}
		return took
	}
	start("warmup", false)
	var with, without []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		first := i%2 == 0
		for _, optOut := range []bool{first, !first} {
			ms := float64(start(fmt.Sprintf("b%d-%t", i, optOut), optOut).Microseconds()) / 1000
			if optOut {
				without = append(without, ms)
			} else {
				with = append(with, ms)
			}
		}
	}
	b.StopTimer()
	p50 := func(xs []float64) float64 { sort.Float64s(xs); return xs[len(xs)/2] }
	b.ReportMetric(p50(with), "ms-start-lxcfs-p50")
	b.ReportMetric(p50(without), "ms-start-own-proc-p50")
}
