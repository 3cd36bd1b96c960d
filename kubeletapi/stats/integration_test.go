package stats

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	criapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"peapod/hack/testenv"
	"peapod/hack/testimages/imagebuild"
)

// TestSummaryFromPeapod runs a real pod through a real `peapod serve` (its
// own root, state, socket, CNI bridge and /24; runc, conmon, the local test
// registry) and reads it back through the three endpoints, with the CRI
// client the agent uses.
func TestSummaryFromPeapod(t *testing.T) {
	testenv.Integration(t)
	testenv.Require(t, "/usr/sbin/runc", "runc")
	testenv.Require(t, "/usr/bin/conmon", "conmon")
	testenv.Require(t, "/usr/lib/cni/bridge", "containernetworking-plugins")
	reg := testenv.Registry(t)
	d := startPeapod(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	image := testenv.Ref(reg, imagebuild.RepoBusybox)
	if _, err := d.img.PullImage(ctx, &runtimeapi.ImageSpec{Image: image}, nil, nil); err != nil {
		t.Fatalf("pull %s: %v", image, err)
	}
	uid := "uid-stats-" + randHex(4)
	meta := &runtimeapi.PodSandboxMetadata{Name: "stats", Namespace: "stats-test", Uid: uid}
	podCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     meta,
		Hostname:     "stats",
		LogDirectory: podLogsDir(d.podLogs, meta.Namespace, meta.Name, meta.Uid),
		Linux:        &runtimeapi.LinuxPodSandboxConfig{CgroupParent: d.cgroupTop + "/besteffort/pod" + uid},
	}
	// The kubelet makes the pod's log directory before RunPodSandbox.
	if err := os.MkdirAll(podCfg.LogDirectory, 0o755); err != nil {
		t.Fatal(err)
	}
	podID, err := d.rt.RunPodSandbox(ctx, podCfg, "")
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	// Burn some CPU, write a log line, then wait.
	cc := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "burn"},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  []string{"sh", "-c", "echo started; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo done; exec sleep 600"},
		LogPath:  "burn/0.log",
	}
	cid, err := d.rt.CreateContainer(ctx, podID, cc, podCfg)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if err := d.rt.StartContainer(ctx, cid); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}

	p := New(Options{NodeName: "stats-node", Runtime: d.rt, Images: d.img, RootDir: d.dir, PodLogsDir: d.podLogs})
	get := func(target string) *statsapi.Summary {
		t.Helper()
		code, body := scrape(t, p.Summary(), http.MethodGet, target)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", target, code, body)
		}
		var s statsapi.Summary
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}
	find := func(s *statsapi.Summary) (*statsapi.PodStats, *statsapi.ContainerStats) {
		for i := range s.Pods {
			if s.Pods[i].PodRef.UID == uid {
				ps := &s.Pods[i]
				for j := range ps.Containers {
					if ps.Containers[j].Name == "burn" {
						return ps, &ps.Containers[j]
					}
				}
				return ps, nil
			}
		}
		return nil, nil
	}

	// Wait until the loop has run and its log line is on disk.
	var s *statsapi.Summary
	var ps *statsapi.PodStats
	var cs *statsapi.ContainerStats
	deadline := time.Now().Add(30 * time.Second)
	for {
		s = get("/stats/summary")
		ps, cs = find(s)
		if cs != nil && cs.CPU != nil && cs.CPU.UsageCoreNanoSeconds != nil && *cs.CPU.UsageCoreNanoSeconds > 100e6 &&
			cs.Logs != nil && cs.Logs.UsedBytes != nil && *cs.Logs.UsedBytes > 0 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(s, "", "  ")
			t.Fatalf("no pod %s with a busy container after 30s:\n%s", uid, b)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("container burn: cpu %d ns, working set %d B, rootfs %d B, logs %d B",
		*cs.CPU.UsageCoreNanoSeconds, deref(cs.Memory.WorkingSetBytes), deref(cs.Rootfs.UsedBytes), deref(cs.Logs.UsedBytes))

	n := s.Node
	if n.NodeName != "stats-node" || n.StartTime.IsZero() || deref(n.CPU.UsageCoreNanoSeconds) == 0 ||
		deref(n.Memory.WorkingSetBytes) == 0 || n.Fs == nil || deref(n.Fs.CapacityBytes) == 0 {
		t.Errorf("node %+v", n)
	}
	if n.Runtime == nil || n.Runtime.ImageFs == nil || deref(n.Runtime.ImageFs.UsedBytes) == 0 || n.Runtime.ImageFs.CapacityBytes == nil {
		t.Errorf("node runtime %+v", n.Runtime)
	}
	if ps.PodRef.Name != "stats" || ps.PodRef.Namespace != "stats-test" || ps.StartTime.IsZero() {
		t.Errorf("pod %+v", ps.PodRef)
	}
	if cs.Memory == nil || deref(cs.Memory.WorkingSetBytes) == 0 {
		t.Errorf("container memory %+v, want a nonzero working set", cs.Memory)
	}
	if ps.CPU == nil || deref(ps.CPU.UsageCoreNanoSeconds) < *cs.CPU.UsageCoreNanoSeconds || ps.Memory == nil || deref(ps.Memory.WorkingSetBytes) == 0 {
		t.Errorf("pod cpu %+v memory %+v", ps.CPU, ps.Memory)
	}
	if ps.Network == nil || len(ps.Network.Interfaces)+len(ps.Network.Name) == 0 {
		t.Errorf("pod network %+v, want the pod's eth0", ps.Network)
	}
	if cs.Rootfs == nil || cs.Rootfs.UsedBytes == nil || cs.Rootfs.CapacityBytes == nil {
		t.Errorf("container rootfs %+v", cs.Rootfs)
	}
	if ps.EphemeralStorage == nil || deref(ps.EphemeralStorage.UsedBytes) < deref(cs.Logs.UsedBytes) {
		t.Errorf("pod ephemeral storage %+v", ps.EphemeralStorage)
	}

	// A second summary over a new runtime sample has the rates.
	time.Sleep(1500 * time.Millisecond)
	s = get("/stats/summary?only_cpu_and_memory=true")
	ps, cs = find(s)
	if cs == nil || cs.CPU.UsageNanoCores == nil || ps.CPU.UsageNanoCores == nil || s.Node.CPU.UsageNanoCores == nil {
		t.Errorf("no usageNanoCores on the second summary: node %+v pod %+v container %+v", s.Node.CPU, ps.CPU, cs)
	}

	// /metrics/resource has the container, as metrics-server reads it.
	_, body := scrape(t, p.ResourceMetrics(), http.MethodGet, "/metrics/resource")
	for _, want := range []string{`container_cpu_usage_seconds_total{container="burn",namespace="stats-test",pod="stats"} `,
		`container_memory_working_set_bytes{container="burn",namespace="stats-test",pod="stats"} `,
		`pod_memory_working_set_bytes{namespace="stats-test",pod="stats"} `, "node_cpu_usage_seconds_total ", "resource_scrape_error 0"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics/resource lacks %q:\n%s", want, body)
		}
	}
	// /metrics/cadvisor: peapod's CRI metrics with cAdvisor's labels, the
	// id being the container's cgroup under the pod's.
	_, body = scrape(t, p.CadvisorMetrics(), http.MethodGet, "/metrics/cadvisor")
	re := regexp.MustCompile(`container_memory_working_set_bytes\{container="burn",id="` + regexp.QuoteMeta(d.cgroupTop+"/besteffort/pod"+uid) +
		`/[^"]+",image="[^"]*",name="` + cid + `",namespace="stats-test",pod="stats"\} [0-9.e+]+ \d+`)
	if !re.MatchString(body) {
		t.Errorf("/metrics/cadvisor lacks the container's working set with cAdvisor labels (%s):\n%s", re, body)
	}
	podSeries := `container_memory_working_set_bytes{container="",id="` + d.cgroupTop + "/besteffort/pod" + uid +
		`",image="",name="",namespace="stats-test",pod="stats"} `
	if !strings.Contains(body, podSeries) {
		t.Errorf("/metrics/cadvisor lacks the pod cgroup's working set %q:\n%s", podSeries, body)
	}
	if os.Getenv("PEAPOD_STATS_DUMP") != "" {
		b, _ := json.MarshalIndent(get("/stats/summary"), "", "  ")
		t.Logf("summary:\n%s\n/metrics/cadvisor:\n%s", b, body)
	}

	if err := d.rt.StopPodSandbox(ctx, podID); err != nil {
		t.Errorf("StopPodSandbox: %v", err)
	}
	if err := d.rt.RemovePodSandbox(ctx, podID); err != nil {
		t.Errorf("RemovePodSandbox: %v", err)
	}
	s = get("/stats/summary")
	if ps, _ := find(s); ps != nil {
		t.Errorf("removed pod still in the summary: %+v", ps)
	}
}

// peapodDaemon is one `peapod serve`, a CRI runtime only (agent off), with
// every path of its own under dir.
type peapodDaemon struct {
	dir, socket, bridge, podLogs string
	// cgroupTop is the test's own top cgroup (pods go below it), removed
	// at the end.
	cgroupTop string
	rt        criapi.RuntimeService
	img       criapi.ImageManagerService
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// startPeapod builds peapod, starts it and registers its teardown: remove
// every pod through the CRI, SIGTERM the daemon by its PID, delete its
// bridge, sweep mounts left below its dir, remove its cgroups and dir.
// (test/e2e's daemon helper lives in _test files of another package,
// hence this small copy.)
func startPeapod(t *testing.T) *peapodDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "peapod-stats-")
	if err != nil {
		t.Fatal(err)
	}
	d := &peapodDaemon{dir: dir, socket: filepath.Join(dir, "run", "peapod.sock"), bridge: "pps" + randHex(5)[:9],
		podLogs: filepath.Join(dir, "pods"), cgroupTop: "/peapod-stats-" + randHex(4)}
	t.Cleanup(func() { os.RemoveAll(dir) })

	bin := filepath.Join(dir, "peapod")
	build := exec.Command("go", "build", "-o", bin, "peapod/cmd/peapod")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build peapod: %v\n%s", err, out)
	}

	subnet := freeSubnet(t)
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "peapod-stats-" + d.bridge,
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": d.bridge, "isGateway": true, "ipMasq": false,
			"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": subnet}}}, "dataDir": filepath.Join(dir, "ipam")},
		}},
	})
	cniDir := filepath.Join(dir, "cni")
	cfgPath := filepath.Join(dir, "peapod.toml")
	writeFiles(t, "/", map[string]string{
		filepath.Join(cniDir, "10-stats.conflist"): string(conf),
		cfgPath: fmt.Sprintf("root = %q\nstate = %q\n[cri]\nsocket = %q\n[http]\naddress = \"127.0.0.1:0\"\n"+
			"[cni]\nconf_dir = %q\nbin_dirs = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\nbridge = %q\nsubnet = %q\n"+
			"[runtimes.runc]\npath = \"/usr/sbin/runc\"\nroot = %q\n[agent]\nenabled = false\n",
			filepath.Join(dir, "root"), filepath.Join(dir, "run"), d.socket, cniDir, d.bridge, subnet, filepath.Join(dir, "run", "runc")),
	})

	logf, err := os.Create(filepath.Join(dir, "peapod.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { d.teardown(t, cmd.Process.Pid, exited) })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(d.socket); err == nil {
			if d.rt, err = remote.NewRemoteRuntimeService(ctx, "unix://"+d.socket, time.Minute, nil, false); err == nil {
				if _, err = d.rt.Version(ctx, "v1"); err == nil {
					if d.img, err = remote.NewRemoteImageService(ctx, "unix://"+d.socket, time.Minute, nil, false); err != nil {
						t.Fatal(err)
					}
					return d
				}
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "peapod.log"))
			t.Fatalf("peapod serve exited at start:\n%s", log)
		case <-ctx.Done():
			t.Fatal("peapod serve did not answer within 30s")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *peapodDaemon) teardown(t *testing.T, pid int, exited chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if d.rt != nil {
		if pods, err := d.rt.ListPodSandbox(ctx, nil); err == nil {
			for _, p := range pods {
				if err := d.rt.RemovePodSandbox(ctx, p.Id); err != nil {
					t.Errorf("cleanup: remove pod %s: %v", p.Id, err)
				}
			}
		}
		d.rt.Close(ctx)
		d.img.Close(ctx)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		syscall.Kill(pid, syscall.SIGKILL)
		<-exited
	}
	if t.Failed() {
		log, _ := os.ReadFile(filepath.Join(d.dir, "peapod.log"))
		t.Logf("peapod log (tail):\n%s", log[max(0, len(log)-6000):])
	}
	exec.Command("ip", "link", "del", d.bridge).Run()
	if data, err := os.ReadFile("/proc/self/mounts"); err == nil {
		lines := strings.Split(string(data), "\n")
		for _, l := range slices.Backward(lines) {
			if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], d.dir) {
				t.Errorf("cleanup: mount left behind: %s", f[1])
				syscall.Unmount(f[1], syscall.MNT_DETACH)
			}
		}
	}
	// The pod's cgroups went with it; their parents are the test's.
	tops, _ := filepath.Glob("/sys/fs/cgroup/*" + d.cgroupTop)
	for _, top := range tops {
		var dirs []string
		filepath.WalkDir(top, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, dir := range slices.Backward(dirs) {
			if err := os.Remove(dir); err != nil {
				t.Errorf("cleanup: cgroup %s: %v", dir, err)
			}
		}
	}
}

// freeSubnet picks a 10.251.X.0/24 not routed on this host.
func freeSubnet(t *testing.T) string {
	out, _ := exec.Command("ip", "-4", "route").Output()
	b := make([]byte, 1)
	for range 50 {
		rand.Read(b)
		s := fmt.Sprintf("10.251.%d.", b[0])
		if !strings.Contains(string(out), s) {
			return s + "0/24"
		}
	}
	t.Fatal("no free test subnet")
	return ""
}
