package stats

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criMetricsFixture is what peapod's cri/metrics_list.go answers, cut down:
// label keys pod, namespace, container, id, image (+ interface).
func criMetricsFixture() *fakeRuntime {
	keys := []string{"pod", "namespace", "container", "id", "image"}
	netKeys := append(append([]string(nil), keys...), "interface")
	m := func(name string, typ runtimeapi.MetricType, ts int64, v uint64, lv ...string) *runtimeapi.Metric {
		return &runtimeapi.Metric{Name: name, Timestamp: ts, MetricType: typ, LabelValues: lv, Value: u(v)}
	}
	const (
		cpu = "container_cpu_usage_seconds_total"
		ws  = "container_memory_working_set_bytes"
		rx  = "container_network_receive_bytes_total"
		st  = "container_start_time_seconds"
	)
	counter, gauge := runtimeapi.MetricType_COUNTER, runtimeapi.MetricType_GAUGE
	return &fakeRuntime{
		descriptors: []*runtimeapi.MetricDescriptor{
			{Name: cpu, Help: "Cumulative CPU time consumed, in whole seconds.", LabelKeys: keys},
			{Name: ws, Help: "Current working set (usage minus inactive file pages), in bytes.", LabelKeys: keys},
			{Name: rx, Help: "Cumulative bytes received, per pod interface.", LabelKeys: netKeys},
			{Name: st, Help: "Start time of the container (pod-level: of the sandbox) since the Unix epoch, in seconds.", LabelKeys: keys},
		},
		metrics: []*runtimeapi.PodSandboxMetrics{{
			PodSandboxId: sbWeb,
			Metrics: []*runtimeapi.Metric{
				m(cpu, counter, statsTS, 3, "web", "default", "", sbWeb, ""),
				m(rx, counter, statsTS, 1000, "web", "default", "", sbWeb, "", "eth0"),
				m(st, gauge, statsTS, 1_799_999_000, "web", "default", "", sbWeb, ""),
			},
			ContainerMetrics: []*runtimeapi.ContainerMetrics{{
				ContainerId: "c-app",
				Metrics: []*runtimeapi.Metric{
					m(cpu, counter, statsTS, 2, "web", "default", "app", "c-app", "busybox:latest"),
					m(ws, gauge, 0, 20971520, "web", "default", "app", "c-app", "busybox:latest"), // measured on demand: no timestamp
					m("container_unknown_total", counter, statsTS, 1, "web", "default", "app", "c-app", "busybox:latest"),
					m(ws, gauge, statsTS, 1, "too", "few", "labels"),
				},
			}, {
				ContainerId: "c-side",
				Metrics:     []*runtimeapi.Metric{m(ws, gauge, statsTS, 10485760, "web", "default", "sidecar", "c-side", "nginx:1")},
			}},
		}},
		info: map[string]string{
			sbWeb:   `{"pid":42,"cgroupParent":"/kubepods/besteffort/poduid-web","config":{}}`,
			"c-app": `{"sandboxID":"sb-web","cgroupsPath":"/kubepods/besteffort/poduid-web/c-app"}`,
			// containerd's layout; a systemd-style path is not a cgroupfs one.
			"c-side": `{"runtimeSpec":{"linux":{"cgroupsPath":"kubepods-besteffort.slice:cri-containerd:c-side"}}}`,
		},
	}
}

const wantCadvisorMetrics = `# HELP container_cpu_usage_seconds_total Cumulative CPU time consumed, in whole seconds.
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="",cpu="total",id="/kubepods/besteffort/poduid-web",image="",name="",namespace="default",pod="web"} 3 1799999999000
container_cpu_usage_seconds_total{container="app",cpu="total",id="/kubepods/besteffort/poduid-web/c-app",image="busybox:latest",name="c-app",namespace="default",pod="web"} 2 1799999999000
# HELP container_memory_working_set_bytes Current working set (usage minus inactive file pages), in bytes.
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",id="/kubepods/besteffort/poduid-web/c-app",image="busybox:latest",name="c-app",namespace="default",pod="web"} 2.097152e+07
container_memory_working_set_bytes{container="sidecar",id="c-side",image="nginx:1",name="c-side",namespace="default",pod="web"} 1.048576e+07 1799999999000
# HELP container_network_receive_bytes_total Cumulative bytes received, per pod interface.
# TYPE container_network_receive_bytes_total counter
container_network_receive_bytes_total{container="",id="/kubepods/besteffort/poduid-web",image="",interface="eth0",name="",namespace="default",pod="web"} 1000 1799999999000
# HELP container_start_time_seconds Start time of the container (pod-level: of the sandbox) since the Unix epoch, in seconds.
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="",id="/kubepods/besteffort/poduid-web",image="",name="",namespace="default",pod="web"} 1.799999e+09 1799999999000
`

func TestCadvisorMetrics(t *testing.T) {
	rt := criMetricsFixture()
	p := newProvider(Options{Runtime: rt, RootDir: t.TempDir()}, v1Host(t), func() time.Time { return testNow })
	for i := range 2 {
		code, body := scrape(t, p.CadvisorMetrics(), http.MethodGet, "/metrics/cadvisor")
		if code != http.StatusOK || body != wantCadvisorMetrics {
			t.Fatalf("scrape %d: %d\n%s\nwant:\n%s\ndiff at: %s", i, code, body, wantCadvisorMetrics, firstDiff(body, wantCadvisorMetrics))
		}
	}
	// Descriptors once; each cgroup once (they never change).
	if rt.calls["ListMetricDescriptors"] != 1 || rt.calls["ListPodSandboxMetrics"] != 2 ||
		rt.calls["ContainerStatus"] != 2 || rt.calls["PodSandboxStatus"] != 1 {
		t.Errorf("calls %v", rt.calls)
	}
	// A container gone from the runtime leaves the cgroup cache.
	rt.metrics[0].ContainerMetrics = rt.metrics[0].ContainerMetrics[:1]
	scrape(t, p.CadvisorMetrics(), http.MethodGet, "/metrics/cadvisor")
	if _, ok := p.cgroups["c-side"]; ok || len(p.cgroups) != 2 {
		t.Errorf("cgroup cache %v after c-side went away", p.cgroups)
	}
}

func TestCadvisorMetricsRuntimeWithout(t *testing.T) {
	unimplemented := status.Error(codes.Unimplemented, "not implemented")
	for _, tc := range []struct {
		name string
		edit func(*fakeRuntime)
	}{
		{name: "no ListMetricDescriptors", edit: func(f *fakeRuntime) { f.descriptorsErr = unimplemented }},
		{name: "no ListPodSandboxMetrics", edit: func(f *fakeRuntime) { f.metricsErr = unimplemented }},
		{name: "runtime error", edit: func(f *fakeRuntime) { f.metricsErr = errors.New("boom") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := criMetricsFixture()
			tc.edit(rt)
			p := newProvider(Options{Runtime: rt, RootDir: t.TempDir()}, v1Host(t), func() time.Time { return testNow })
			if code, body := scrape(t, p.CadvisorMetrics(), http.MethodGet, "/metrics/cadvisor"); code != http.StatusOK || body != "" {
				t.Errorf("got %d %q, want 200 and an empty body", code, body)
			}
		})
	}
}

func TestCgroupFromInfo(t *testing.T) {
	ctr := [][]string{{"cgroupsPath"}, {"runtimeSpec", "linux", "cgroupsPath"}}
	for _, tc := range []struct {
		name, info, want string
	}{
		{name: "peapod", info: `{"cgroupsPath":"/kubepods/pod1/c1"}`, want: "/kubepods/pod1/c1"},
		{name: "containerd", info: `{"runtimeSpec":{"linux":{"cgroupsPath":"/kubepods/pod1/c1"}}}`, want: "/kubepods/pod1/c1"},
		{name: "systemd slice", info: `{"cgroupsPath":"kubepods.slice:cri:c1"}`, want: ""},
		{name: "wrong type", info: `{"cgroupsPath":7,"runtimeSpec":"x"}`, want: ""},
		{name: "not JSON", info: `cgroupsPath=/a`, want: ""},
		{name: "empty", info: ``, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cgroupFromInfo(tc.info, ctr...); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
