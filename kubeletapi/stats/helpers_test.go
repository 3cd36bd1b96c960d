package stats

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	criapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeRuntime stands in for the runtime in unit tests: it answers the RPCs
// the stats read with fixed figures. The embedded interface is nil, so an
// RPC the package should not call panics.
type fakeRuntime struct {
	criapi.RuntimeService

	mu              sync.Mutex
	sandboxes       []*runtimeapi.PodSandbox
	containers      []*runtimeapi.Container
	sandboxStats    []*runtimeapi.PodSandboxStats
	sandboxStatsErr error
	containerStats  []*runtimeapi.ContainerStats
	descriptors     []*runtimeapi.MetricDescriptor
	descriptorsErr  error
	metrics         []*runtimeapi.PodSandboxMetrics
	metricsErr      error
	// info is the verbose status "info" JSON by container or sandbox id.
	info  map[string]string
	calls map[string]int
}

func (f *fakeRuntime) called(rpc string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[rpc]++
}

func (f *fakeRuntime) ListContainers(context.Context, *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	f.called("ListContainers")
	return f.containers, nil
}

func (f *fakeRuntime) ListPodSandbox(context.Context, *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	f.called("ListPodSandbox")
	return f.sandboxes, nil
}

func (f *fakeRuntime) ListPodSandboxStats(context.Context, *runtimeapi.PodSandboxStatsFilter) ([]*runtimeapi.PodSandboxStats, error) {
	f.called("ListPodSandboxStats")
	return f.sandboxStats, f.sandboxStatsErr
}

func (f *fakeRuntime) ListContainerStats(context.Context, *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error) {
	f.called("ListContainerStats")
	return f.containerStats, nil
}

func (f *fakeRuntime) ListMetricDescriptors(context.Context) ([]*runtimeapi.MetricDescriptor, error) {
	f.called("ListMetricDescriptors")
	return f.descriptors, f.descriptorsErr
}

func (f *fakeRuntime) ListPodSandboxMetrics(context.Context) ([]*runtimeapi.PodSandboxMetrics, error) {
	f.called("ListPodSandboxMetrics")
	return f.metrics, f.metricsErr
}

func (f *fakeRuntime) ContainerStatus(_ context.Context, id string, verbose bool) (*runtimeapi.ContainerStatusResponse, error) {
	f.called("ContainerStatus")
	resp := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: id}}
	if verbose && f.info[id] != "" {
		resp.Info = map[string]string{"info": f.info[id]}
	}
	return resp, nil
}

func (f *fakeRuntime) PodSandboxStatus(_ context.Context, id string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error) {
	f.called("PodSandboxStatus")
	resp := &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{Id: id}}
	if verbose && f.info[id] != "" {
		resp.Info = map[string]string{"info": f.info[id]}
	}
	return resp, nil
}

// fakeImages answers ImageFsInfo only.
type fakeImages struct {
	criapi.ImageManagerService
	fs []*runtimeapi.FilesystemUsage
}

func (f *fakeImages) ImageFsInfo(context.Context) (*runtimeapi.ImageFsInfoResponse, error) {
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: f.fs}, nil
}

// testNow is the fixed clock of the unit tests.
var testNow = time.Unix(1_800_000_000, 0)

// Host fixtures: /proc and /sys/fs/cgroup of a cgroup v1 machine.
const (
	procStatFixture = "cpu  663192 25 269934 2909440 14532 0 12914 698 0 0\n" +
		"cpu0 328228 11 129791 1467846 4369 0 4458 329 0 0\nbtime 1763900000\n"
	meminfoFixture = "MemTotal:        8029412 kB\nMemFree:          512000 kB\nMemAvailable:    6000000 kB\n" +
		"Inactive(file):  1669272 kB\nAnonPages:        11544 kB\nSwapTotal:       1048576 kB\nSwapFree:         1044480 kB\n"
	memoryStatV1Fixture = "cache 12500992\nrss 5476352\npgfault 106255\ntotal_rss 11821056\n" +
		"total_pgfault 344319702\ntotal_pgmajfault 84959\ntotal_inactive_file 1709334528\n"
)

// writeFiles writes files (path relative to dir → content) and returns dir.
func writeFiles(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// v1Host lays out a cgroup v1 machine's files under a new directory.
func v1Host(t *testing.T) hostPaths {
	t.Helper()
	dir := writeFiles(t, t.TempDir(), map[string]string{
		"proc/stat":                           procStatFixture,
		"proc/meminfo":                        meminfoFixture,
		"proc/net/dev":                        netDevFixture,
		"proc/loadavg":                        "0.10 0.20 0.30 3/512 4242\n",
		"proc/sys/kernel/pid_max":             "4194304\n",
		"proc/sys/kernel/threads-max":         "62761\n",
		"cgroup/memory/memory.usage_in_bytes": "4793556992\n",
		"cgroup/memory/memory.stat":           memoryStatV1Fixture,
	})
	return hostPaths{proc: filepath.Join(dir, "proc"), cgroup: filepath.Join(dir, "cgroup")}
}

func u(v uint64) *runtimeapi.UInt64Value { return &runtimeapi.UInt64Value{Value: v} }

// Pod fixtures: default/web (app, sidecar; an exited init container and an
// older, stopped sandbox of the same pod), kube-system/coredns-abc (one
// container whose runtime gives no CPU figures), and stats of a sandbox
// ListPodSandbox does not know.
var (
	statsTS = testNow.Add(-time.Second).UnixNano() // when the runtime sampled

	sbWeb    = "sb-web"
	sbWebOld = "sb-web-old"
	sbDNS    = "sb-dns"
)

func sec(s float64) int64 { return int64(s * float64(time.Second)) }

func podMeta(ns, name, uid string) *runtimeapi.PodSandboxMetadata {
	return &runtimeapi.PodSandboxMetadata{Namespace: ns, Name: name, Uid: uid}
}

// podFixture returns the runtime; rootfsDir is the writable layers'
// mount point.
func podFixture(rootfsDir string) *fakeRuntime {
	cmeta := func(name string) *runtimeapi.ContainerMetadata { return &runtimeapi.ContainerMetadata{Name: name} }
	cattr := func(id, name string) *runtimeapi.ContainerAttributes {
		return &runtimeapi.ContainerAttributes{Id: id, Metadata: cmeta(name)}
	}
	layer := func(used, inodes uint64) *runtimeapi.FilesystemUsage {
		return &runtimeapi.FilesystemUsage{Timestamp: statsTS, FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: rootfsDir},
			UsedBytes: u(used), InodesUsed: u(inodes)}
	}
	cpu := func(ns uint64) *runtimeapi.CpuUsage {
		return &runtimeapi.CpuUsage{Timestamp: statsTS, UsageCoreNanoSeconds: u(ns)}
	}
	mem := func(ws, usage, rss uint64) *runtimeapi.MemoryUsage {
		return &runtimeapi.MemoryUsage{Timestamp: statsTS, WorkingSetBytes: u(ws), UsageBytes: u(usage), RssBytes: u(rss),
			PageFaults: u(100), MajorPageFaults: u(1)}
	}
	return &fakeRuntime{
		sandboxes: []*runtimeapi.PodSandbox{
			{Id: sbWebOld, Metadata: podMeta("default", "web", "uid-web-old"), State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY, CreatedAt: sec(1_799_990_000)},
			{Id: sbWeb, Metadata: podMeta("default", "web", "uid-web"), State: runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: sec(1_799_999_000)},
			{Id: sbDNS, Metadata: podMeta("kube-system", "coredns-abc", "uid-dns"), State: runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: sec(1_799_999_500)},
		},
		containers: []*runtimeapi.Container{
			{Id: "c-init", PodSandboxId: sbWeb, Metadata: cmeta("init"), State: runtimeapi.ContainerState_CONTAINER_EXITED, CreatedAt: sec(1_799_999_050)},
			{Id: "c-app", PodSandboxId: sbWeb, Metadata: cmeta("app"), State: runtimeapi.ContainerState_CONTAINER_RUNNING, CreatedAt: sec(1_799_999_100)},
			{Id: "c-side", PodSandboxId: sbWeb, Metadata: cmeta("sidecar"), State: runtimeapi.ContainerState_CONTAINER_RUNNING, CreatedAt: sec(1_799_999_200.5)},
			{Id: "c-dns", PodSandboxId: sbDNS, Metadata: cmeta("coredns"), State: runtimeapi.ContainerState_CONTAINER_RUNNING, CreatedAt: sec(1_799_999_600)},
		},
		sandboxStats: []*runtimeapi.PodSandboxStats{{
			Attributes: &runtimeapi.PodSandboxAttributes{Id: sbWeb, Metadata: podMeta("default", "web", "uid-web")},
			Linux: &runtimeapi.LinuxPodSandboxStats{
				Cpu:    cpu(3_500_000_000),
				Memory: mem(31457280, 41943040, 20971520),
				Network: &runtimeapi.NetworkUsage{Timestamp: statsTS,
					DefaultInterface: &runtimeapi.NetworkInterfaceUsage{Name: "eth0", RxBytes: u(1000), RxErrors: u(0), TxBytes: u(2000), TxErrors: u(1)}},
				Process: &runtimeapi.ProcessUsage{Timestamp: statsTS, ProcessCount: u(3)},
				Containers: []*runtimeapi.ContainerStats{
					{Attributes: cattr("c-app", "app"), Cpu: cpu(2_500_000_000), Memory: mem(20971520, 25165824, 16777216), WritableLayer: layer(8192, 3)},
					{Attributes: cattr("c-side", "sidecar"), Cpu: cpu(1_000_000_000), Memory: mem(10485760, 16777216, 4194304), WritableLayer: layer(4096, 1),
						Swap: &runtimeapi.SwapUsage{Timestamp: statsTS, SwapUsageBytes: u(4096), SwapAvailableBytes: u(1048576)}},
					{Attributes: cattr("c-init", "init"), Cpu: cpu(1), Memory: mem(1, 1, 1)},
				},
			},
		}, {
			Attributes: &runtimeapi.PodSandboxAttributes{Id: sbDNS, Metadata: podMeta("kube-system", "coredns-abc", "uid-dns")},
			Linux: &runtimeapi.LinuxPodSandboxStats{
				Cpu:    cpu(250_000_000),
				Memory: mem(8388608, 9437184, 6291456),
				Containers: []*runtimeapi.ContainerStats{
					{Attributes: cattr("c-dns", "coredns"), Memory: mem(8388608, 9437184, 6291456)},
				},
			},
		}, {
			Attributes: &runtimeapi.PodSandboxAttributes{Id: "sb-unknown", Metadata: podMeta("default", "gone", "uid-gone")},
			Linux:      &runtimeapi.LinuxPodSandboxStats{Cpu: cpu(1)},
		}},
	}
}
