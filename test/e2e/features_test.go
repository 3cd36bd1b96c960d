package e2e

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/hack/testimages/imagebuild"
)

// runPod starts a pod and returns its id; the daemon's cleanup removes it.
func runPod(t *testing.T, d *daemon, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	run, err := d.rt.RunPodSandbox(d.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", cfg.Metadata.Name, err)
	}
	return run.PodSandboxId
}

func startContainer(t *testing.T, d *daemon, podID string, pod *runtimeapi.PodSandboxConfig, cc *runtimeapi.ContainerConfig) string {
	t.Helper()
	c, err := d.rt.CreateContainer(d.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: pod})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", cc.Metadata.Name, err)
	}
	if _, err := d.rt.StartContainer(d.ctx(), &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
		t.Fatalf("StartContainer %s: %v", cc.Metadata.Name, err)
	}
	return c.ContainerId
}

func execOut(t testing.TB, d *daemon, id string, cmd ...string) string {
	t.Helper()
	r, err := d.rt.ExecSync(d.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 10})
	if err != nil {
		t.Fatalf("ExecSync %v: %v", cmd, err)
	}
	if r.ExitCode != 0 {
		t.Fatalf("ExecSync %v: exit %d, stderr %q", cmd, r.ExitCode, r.Stderr)
	}
	return string(r.Stdout)
}

// TestContainerFeatures: image config, users, namespaces modes, host
// network, stop signal and OOM kills, each in a real container.
func TestContainerFeatures(t *testing.T) {
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	pullBusybox(t, d)
	cfgImage := reg + "/" + imagebuild.RepoBusyboxConfig + ":latest"
	if _, err := d.img.PullImage(d.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: cfgImage}}); err != nil {
		t.Fatal(err)
	}

	t.Run("image config: entrypoint, cmd, env, workdir, user", func(t *testing.T) {
		pod := podConfig(d, "imgcfg")
		podID := runPod(t, d, pod)
		cc := &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "cfg"},
			Image:    &runtimeapi.ImageSpec{Image: cfgImage},
			Args:     []string{"echo $FOO $(id -u):$(id -g) $(pwd); sleep 300"},
			Envs:     []*runtimeapi.KeyValue{{Key: "EXTRA", Value: []byte("1")}},
			LogPath:  "cfg.log",
		}
		id := startContainer(t, d, podID, pod, cc)
		st := waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
		if u := st.GetUser().GetLinux(); u.GetUid() != 1000 || u.GetGid() != 1000 {
			t.Errorf("effective user = %v, want 1000:1000", u)
		}
		waitLog(t, st.LogPath, "stdout F bar 1000:1000 /work")
		if out := execOut(t, d, id, "sh", "-c", "echo $EXTRA $EQUALS"); strings.TrimSpace(out) != "1 a=b" {
			t.Errorf("env = %q", out)
		}
		// run_as_user overrides the image user.
		cc2 := &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "root"},
			Image:    &runtimeapi.ImageSpec{Image: cfgImage},
			Args:     []string{"sleep 300"},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				RunAsUser: &runtimeapi.Int64Value{Value: 33}, SupplementalGroups: []int64{4242},
			}},
		}
		id2 := startContainer(t, d, podID, pod, cc2)
		if out := execOut(t, d, id2, "id"); !strings.Contains(out, "uid=33") || !strings.Contains(out, "4242") {
			t.Errorf("id = %q, want uid 33 with group 4242", out)
		}
	})

	t.Run("PID namespace POD shares the pause as PID 1", func(t *testing.T) {
		pod := podConfig(d, "pidpod")
		pod.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}
		podID := runPod(t, d, pod)
		cc := containerConfig("a", "sleep", "300")
		cc.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}}
		id := startContainer(t, d, podID, pod, cc)
		if out := execOut(t, d, id, "cat", "/proc/1/cmdline"); !strings.Contains(out, "pause") {
			t.Errorf("PID 1 is %q, want the pause", out)
		}
	})

	t.Run("hostNetwork pod sees the host's interfaces and gets no CNI", func(t *testing.T) {
		pod := podConfig(d, "hostnet")
		pod.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}
		podID := runPod(t, d, pod)
		st, err := d.rt.PodSandboxStatus(d.ctx(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
		if err != nil || st.Status.GetNetwork().GetIp() != "" {
			t.Fatalf("hostNetwork pod status = %v, %v; want no pod IP", st, err)
		}
		cc := containerConfig("a", "sleep", "300")
		cc.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}}
		id := startContainer(t, d, podID, pod, cc)
		if out := execOut(t, d, id, "cat", "/proc/net/dev"); !strings.Contains(out, d.bridge) {
			t.Errorf("host interfaces not visible (no %s):\n%s", d.bridge, out)
		}
		host, _ := os.Hostname()
		if out := execOut(t, d, id, "hostname"); strings.TrimSpace(out) != host {
			t.Errorf("hostname = %q, want the node's %q", out, host)
		}
	})

	t.Run("stop uses the image's StopSignal, then SIGKILL after the timeout", func(t *testing.T) {
		pod := podConfig(d, "stopsig")
		podID := runPod(t, d, pod)
		cc := &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "trap"},
			Image:    &runtimeapi.ImageSpec{Image: cfgImage},
			Args:     []string{"trap 'echo got-usr1; exit 42' USR1; trap '' TERM; while true; do sleep 0.1; done"},
			LogPath:  "trap.log",
		}
		id := startContainer(t, d, podID, pod, cc)
		waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
		time.Sleep(300 * time.Millisecond) // let the shell install its traps
		if _, err := d.rt.StopContainer(d.ctx(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 10}); err != nil {
			t.Fatal(err)
		}
		st := waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_EXITED)
		if st.ExitCode != 42 {
			t.Errorf("exit code = %d (%s), want 42 from the SIGUSR1 trap", st.ExitCode, st.Reason)
		}
		// The busybox image has no StopSignal: SIGTERM, ignored, then SIGKILL.
		cc2 := containerConfig("stubborn", "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done")
		id2 := startContainer(t, d, podID, pod, cc2)
		waitState(t, d, id2, runtimeapi.ContainerState_CONTAINER_RUNNING)
		time.Sleep(300 * time.Millisecond)
		start := time.Now()
		if _, err := d.rt.StopContainer(d.ctx(), &runtimeapi.StopContainerRequest{ContainerId: id2, Timeout: 1}); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		st = waitState(t, d, id2, runtimeapi.ContainerState_CONTAINER_EXITED)
		if st.ExitCode != 137 || took < time.Second || took > 5*time.Second {
			t.Errorf("stubborn container: exit %d after %v, want 137 after ~1s", st.ExitCode, took)
		}
	})

	t.Run("OOM kill is reported as OOMKilled", func(t *testing.T) {
		pod := podConfig(d, "oom")
		podID := runPod(t, d, pod)
		cc := containerConfig("hog", "sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived")
		cc.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}}
		id := startContainer(t, d, podID, pod, cc)
		st := waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_EXITED)
		if st.Reason != "OOMKilled" {
			t.Errorf("reason = %q exit %d, want OOMKilled", st.Reason, st.ExitCode)
		}
	})

	t.Run("oom_score_adj below peapod's own is raised, not refused", func(t *testing.T) {
		pod := podConfig(d, "oomadj")
		podID := runPod(t, d, pod)
		cc := containerConfig("guaranteed", "sleep", "300")
		cc.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{OomScoreAdj: -997}}
		id := startContainer(t, d, podID, pod, cc)
		waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
		own, _ := os.ReadFile("/proc/self/oom_score_adj")
		if out := execOut(t, d, id, "cat", "/proc/self/oom_score_adj"); strings.TrimSpace(out) != strings.TrimSpace(string(own)) {
			t.Errorf("container oom_score_adj = %q, want peapod's %q", out, own)
		}
	})
}

func waitLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %s lacks %q:\n%s", path, want, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// httpAddr is the address the daemon's HTTP endpoint listens on (port 0 in
// tests), read from the running daemon's part of the log: the CRI socket
// answers a moment before the HTTP endpoint listens.
func (d *daemon) httpAddr() string {
	d.t.Helper()
	re := regexp.MustCompile(`"HTTP endpoint listening" address="([^"]+)"`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, err := os.Open(d.logPath)
		if err == nil {
			f.Seek(d.logStart, io.SeekStart) // this daemon's lines only
			var last string
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					last = m[1]
				}
			}
			f.Close()
			if last != "" {
				return last
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatal("no HTTP address in the daemon log")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHTTPEndpointAndImportExport: /healthz, CRI call metrics and image
// pull metrics on /metrics, and `peapod images import/export` through the
// running daemon (the air-gapped path).
func TestHTTPEndpointAndImportExport(t *testing.T) {
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	addr := d.httpAddr()
	get := func(path string) string {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s\n%s", path, resp.Status, body)
		}
		return string(body)
	}
	if got := get("/healthz"); strings.TrimSpace(got) != "ok" {
		t.Errorf("/healthz = %q", got)
	}

	// Import a locally built archive through the CLI, with no registry involved.
	set, err := imagebuild.Cached(imagebuild.Options{})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "busybox-oci.tar")
	if err := imagebuild.WriteOCIArchiveFile(archive, set.BusyboxOCI, imagebuild.ArchiveRefName); err != nil {
		t.Fatal(err)
	}
	peapod := filepath.Join(binDir, "peapod")
	out, err := exec.Command(peapod, "images", "import", "--config", d.cfgPath, archive).CombinedOutput()
	if err != nil {
		t.Fatalf("peapod images import: %v\n%s", err, out)
	}
	st, err := d.img.ImageStatus(d.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: imagebuild.ArchiveRefName}})
	if err != nil || st.Image == nil {
		t.Fatalf("imported image not found by %s: %v, %v (import said %s)", imagebuild.ArchiveRefName, st, err, out)
	}
	// The imported image runs.
	pod := podConfig(d, "imported")
	podID := runPod(t, d, pod)
	cc := containerConfig("a", "sleep", "300")
	cc.Image.Image = imagebuild.ArchiveRefName
	id := startContainer(t, d, podID, pod, cc)
	waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING)

	exported := filepath.Join(t.TempDir(), "export.tar")
	if out, err := exec.Command(peapod, "images", "export", "--config", d.cfgPath, exported, imagebuild.ArchiveRefName).CombinedOutput(); err != nil {
		t.Fatalf("peapod images export: %v\n%s", err, out)
	}
	if fi, err := os.Stat(exported); err != nil || fi.Size() < 100<<10 {
		t.Fatalf("export wrote %v, %v", fi, err)
	}
	if out, err := exec.Command(peapod, "images", "import", "--config", d.cfgPath, filepath.Join(t.TempDir(), "missing.tar")).CombinedOutput(); err == nil {
		t.Fatalf("import of a missing file succeeded: %s", out)
	}

	pullBusybox(t, d)
	metrics := get("/metrics")
	for _, want := range []string{
		`peapod_cri_request_duration_seconds_count{method="PullImage"}`,
		`peapod_cri_request_duration_seconds_count{method="RunPodSandbox"}`,
		`peapod_image_pull_bytes_total`,
		`peapod_image_pull_duration_seconds`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// A failing call is counted by code.
	d.rt.StartContainer(d.ctx(), &runtimeapi.StartContainerRequest{ContainerId: "nope"})
	if m := get("/metrics"); !strings.Contains(m, `peapod_cri_request_errors_total{code="NotFound",method="StartContainer"} 1`) {
		t.Errorf("/metrics lacks the StartContainer NotFound error")
	}
}

// TestCheckCommand: `peapod check` on this machine passes every check,
// including a pause started in new namespaces and confined.
func TestCheckCommand(t *testing.T) {
	integration(t)
	out, err := exec.Command(filepath.Join(binDir, "peapod"), "check").CombinedOutput()
	if err != nil {
		t.Fatalf("peapod check: %v\n%s", err, out)
	}
	for _, want := range []string{"ok    conmon", "ok    runtime runc", "ok    pause (new namespaces, confined)", "ok    overlayfs"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("peapod check output lacks %q:\n%s", want, out)
		}
	}
}
