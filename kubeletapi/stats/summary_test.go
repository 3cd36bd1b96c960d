package stats

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

type summaryEnv struct {
	p       *Provider
	rt      *fakeRuntime
	now     *time.Time
	logsDir string
	rootfs  string
}

func newSummaryEnv(t *testing.T) *summaryEnv {
	t.Helper()
	e := &summaryEnv{logsDir: t.TempDir(), rootfs: t.TempDir()}
	now := testNow
	e.now = &now
	e.rt = podFixture(e.rootfs)
	images := &fakeImages{fs: []*runtimeapi.FilesystemUsage{{Timestamp: statsTS,
		FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: e.rootfs}, UsedBytes: u(123456789), InodesUsed: u(4321)}}}
	e.p = newProvider(Options{NodeName: "n1", Runtime: e.rt, Images: images, RootDir: t.TempDir(), PodLogsDir: e.logsDir},
		v1Host(t), func() time.Time { return *e.now })
	return e
}

func (e *summaryEnv) get(t *testing.T, target string) (*statsapi.Summary, string) {
	t.Helper()
	code, body := scrape(t, e.p.Summary(), http.MethodGet, target)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", target, code, body)
	}
	var s statsapi.Summary
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("decode: %v\n%s", err, body)
	}
	return &s, body
}

// diskUsage is what the kubelet counts for one file: its blocks, and one inode.
func diskUsage(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return uint64(st.Blocks) * 512
}

func eq(t *testing.T, what string, got *uint64, want uint64) {
	t.Helper()
	if got == nil {
		t.Errorf("%s = nil, want %d", what, want)
	} else if *got != want {
		t.Errorf("%s = %d, want %d", what, *got, want)
	}
}

func TestSummary(t *testing.T) {
	e := newSummaryEnv(t)
	appLog := filepath.Join(e.logsDir, "default_web_uid-web", "app", "0.log")
	podLog := filepath.Join(e.logsDir, "default_web_uid-web", "stray.log")
	writeFiles(t, "/", map[string]string{
		appLog: strings.Repeat("2026-01-01T00:00:00Z stdout F hello\n", 300),
		podLog: "x",
	})
	s, body := e.get(t, "/stats/summary")

	n := s.Node
	if n.NodeName != "n1" || !n.StartTime.Time.Equal(time.Unix(1763900000, 0)) {
		t.Errorf("node %q started %v", n.NodeName, n.StartTime)
	}
	eq(t, "node cpu", n.CPU.UsageCoreNanoSeconds, 946065*10_000_000)
	eq(t, "node working set", n.Memory.WorkingSetBytes, 4793556992-1709334528)
	eq(t, "node swap", n.Swap.SwapUsageBytes, 4096*1024)
	if n.Network == nil || n.Network.Name != "eth0" || len(n.Network.Interfaces) != 1 {
		t.Errorf("node network %+v", n.Network)
	}
	if n.Fs == nil || n.Fs.CapacityBytes == nil || *n.Fs.CapacityBytes == 0 || n.Fs.InodesUsed == nil {
		t.Errorf("node fs %+v", n.Fs)
	}
	if n.Rlimit == nil || *n.Rlimit.MaxPID != 62761 || *n.Rlimit.NumOfRunningProcesses != 512 {
		t.Errorf("rlimit %+v", n.Rlimit)
	}
	if n.Runtime == nil || n.Runtime.ImageFs == nil || n.Runtime.ContainerFs == nil {
		t.Fatalf("runtime %+v", n.Runtime)
	}
	eq(t, "imageFs used", n.Runtime.ImageFs.UsedBytes, 123456789)
	eq(t, "imageFs inodes used", n.Runtime.ImageFs.InodesUsed, 4321)
	if n.Runtime.ImageFs.CapacityBytes == nil || n.Runtime.ImageFs.AvailableBytes == nil {
		t.Errorf("imageFs has no capacity from statfs: %+v", n.Runtime.ImageFs)
	}
	if n.SystemContainers != nil {
		t.Errorf("systemContainers %+v", n.SystemContainers)
	}

	if len(s.Pods) != 2 || s.Pods[0].PodRef != (statsapi.PodReference{Namespace: "default", Name: "web", UID: "uid-web"}) ||
		s.Pods[1].PodRef.Name != "coredns-abc" {
		t.Fatalf("pods %+v", s.Pods)
	}
	web, dns := s.Pods[0], s.Pods[1]
	if !web.StartTime.Time.Equal(time.Unix(1_799_999_000, 0)) {
		t.Errorf("web started %v, want its sandbox's creation", web.StartTime)
	}
	if len(web.Containers) != 2 || web.Containers[0].Name != "app" || web.Containers[1].Name != "sidecar" {
		t.Fatalf("web containers %+v (the exited init container must not be there)", web.Containers)
	}
	app, side := web.Containers[0], web.Containers[1]
	if !app.StartTime.Time.Equal(time.Unix(1_799_999_100, 0)) {
		t.Errorf("app started %v, want its creation", app.StartTime)
	}
	eq(t, "app cpu", app.CPU.UsageCoreNanoSeconds, 2_500_000_000)
	if app.CPU.UsageNanoCores != nil {
		t.Errorf("app usageNanoCores = %d on the first sample, want nil", *app.CPU.UsageNanoCores)
	}
	eq(t, "app working set", app.Memory.WorkingSetBytes, 20971520)
	eq(t, "app rss", app.Memory.RSSBytes, 16777216)
	eq(t, "app rootfs used", app.Rootfs.UsedBytes, 8192)
	eq(t, "app rootfs inodes used", app.Rootfs.InodesUsed, 3)
	if app.Rootfs.CapacityBytes == nil || app.Rootfs.InodesFree == nil {
		t.Errorf("app rootfs has no capacity from statfs of its mount point: %+v", app.Rootfs)
	}
	appLogBytes := diskUsage(t, appLog)
	eq(t, "app logs used", app.Logs.UsedBytes, appLogBytes)
	eq(t, "app logs inodes", app.Logs.InodesUsed, 1)
	if side.Logs != nil {
		t.Errorf("sidecar has no log dir, got logs %+v", side.Logs)
	}
	eq(t, "sidecar swap", side.Swap.SwapUsageBytes, 4096)

	eq(t, "web cpu", web.CPU.UsageCoreNanoSeconds, 3_500_000_000)
	eq(t, "web working set", web.Memory.WorkingSetBytes, 31457280)
	if web.Network == nil || web.Network.Name != "eth0" || *web.Network.RxBytes != 1000 || *web.Network.TxErrors != 1 {
		t.Errorf("web network %+v", web.Network)
	}
	eq(t, "web processes", web.ProcessStats.ProcessCount, 3)
	eq(t, "web swap (its containers')", web.Swap.SwapUsageBytes, 4096)
	// rootfs + logs of both containers, and the files directly in the pod's log dir.
	eq(t, "web ephemeral used", web.EphemeralStorage.UsedBytes, 8192+appLogBytes+4096+diskUsage(t, podLog))
	eq(t, "web ephemeral inodes", web.EphemeralStorage.InodesUsed, 3+1+1+1)
	if web.VolumeStats != nil {
		t.Errorf("volume stats %+v", web.VolumeStats)
	}

	// The runtime gave coredns no CPU figures: nil, not zero.
	if len(dns.Containers) != 1 || dns.Containers[0].CPU != nil {
		t.Errorf("coredns containers %+v, want one without cpu", dns.Containers)
	}
	eq(t, "coredns pod cpu", dns.CPU.UsageCoreNanoSeconds, 250_000_000)
	if dns.Network != nil || dns.ProcessStats != nil {
		t.Errorf("coredns network %+v processes %+v, want nil (not reported)", dns.Network, dns.ProcessStats)
	}
	if !strings.Contains(body, `"ephemeral-storage"`) || !strings.Contains(body, `"imageFs"`) {
		t.Errorf("JSON lacks kubelet field names:\n%s", body)
	}

	// Ten seconds later the runtime has a new sample: the rates appear.
	*e.now = e.now.Add(10 * time.Second)
	later := statsTS + int64(10*time.Second)
	web0 := e.rt.sandboxStats[0].Linux
	web0.Cpu = &runtimeapi.CpuUsage{Timestamp: later, UsageCoreNanoSeconds: u(3_500_000_000 + 5_000_000_000)}
	web0.Containers[0].Cpu = &runtimeapi.CpuUsage{Timestamp: later, UsageCoreNanoSeconds: u(2_500_000_000 + 2_000_000_000)}
	s, _ = e.get(t, "/stats/summary")
	eq(t, "app usageNanoCores", s.Pods[0].Containers[0].CPU.UsageNanoCores, 200_000_000)
	eq(t, "web usageNanoCores", s.Pods[0].CPU.UsageNanoCores, 500_000_000)
	if s.Pods[0].Containers[1].CPU.UsageNanoCores != nil {
		t.Errorf("sidecar: same sample twice has no interval, want nil usageNanoCores")
	}
}

func TestSummaryOnlyCPUAndMemory(t *testing.T) {
	e := newSummaryEnv(t)
	s, _ := e.get(t, "/stats/summary?only_cpu_and_memory=true")
	n := s.Node
	if n.CPU == nil || n.Memory == nil || n.Swap == nil || n.StartTime.IsZero() {
		t.Errorf("node cpu/memory/swap/startTime missing: %+v", n)
	}
	if n.Network != nil || n.Fs != nil || n.Runtime != nil || n.Rlimit != nil {
		t.Errorf("node has more than cpu and memory: %+v", n)
	}
	if len(s.Pods) != 2 {
		t.Fatalf("pods %+v", s.Pods)
	}
	for _, p := range s.Pods {
		if p.Network != nil || p.EphemeralStorage != nil || p.ProcessStats != nil {
			t.Errorf("pod %s has more than cpu and memory: %+v", p.PodRef.Name, p)
		}
		for _, c := range p.Containers {
			if c.Rootfs != nil || c.Logs != nil {
				t.Errorf("container %s has fs figures", c.Name)
			}
		}
	}
	eq(t, "web cpu", s.Pods[0].CPU.UsageCoreNanoSeconds, 3_500_000_000)

	// only_cpu_and_memory must be exactly "true", as the kubelet reads it.
	s, _ = e.get(t, "/stats/summary?only_cpu_and_memory=1")
	if s.Node.Fs == nil {
		t.Error("only_cpu_and_memory=1 was taken as true")
	}
}

// A runtime without ListPodSandboxStats: the kubelet's other path, pod CPU
// and memory summed over the containers of ListContainerStats.
func TestSummaryWithoutPodSandboxStats(t *testing.T) {
	e := newSummaryEnv(t)
	e.rt.sandboxStatsErr = status.Error(codes.Unimplemented, "unknown method ListPodSandboxStats")
	for _, ps := range e.rt.sandboxStats {
		e.rt.containerStats = append(e.rt.containerStats, ps.Linux.Containers...)
	}
	s, _ := e.get(t, "/stats/summary")
	if e.rt.calls["ListContainerStats"] != 1 {
		t.Errorf("calls %v", e.rt.calls)
	}
	if len(s.Pods) != 2 {
		t.Fatalf("pods %+v", s.Pods)
	}
	web, dns := s.Pods[0], s.Pods[1]
	if len(web.Containers) != 2 {
		t.Fatalf("web containers %+v", web.Containers)
	}
	eq(t, "web cpu = app + sidecar", web.CPU.UsageCoreNanoSeconds, 2_500_000_000+1_000_000_000)
	eq(t, "web working set = app + sidecar", web.Memory.WorkingSetBytes, 20971520+10485760)
	if web.Network != nil {
		t.Errorf("web network %+v: the containers' stats have none", web.Network)
	}
	if web.EphemeralStorage == nil {
		t.Error("no ephemeral storage")
	}
	if dns.CPU != nil {
		t.Errorf("coredns pod cpu %+v: its container has none, so the pod's is unknown", dns.CPU)
	}
	eq(t, "coredns working set", dns.Memory.WorkingSetBytes, 8388608)
}

func TestSummaryErrors(t *testing.T) {
	e := newSummaryEnv(t)
	e.rt.sandboxStatsErr = status.Error(codes.Unavailable, "runtime is down")
	code, body := scrape(t, e.p.Summary(), http.MethodGet, "/stats/summary")
	if code != http.StatusInternalServerError || !strings.Contains(body, "runtime is down") {
		t.Errorf("got %d %q, want 500 naming the cause", code, body)
	}

	e = newSummaryEnv(t)
	os.Remove(filepath.Join(e.p.host.proc, "stat"))
	if code, _ := scrape(t, e.p.Summary(), http.MethodGet, "/stats/summary"); code != http.StatusInternalServerError {
		t.Errorf("no /proc/stat: %d, want 500", code)
	}
}
