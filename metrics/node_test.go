package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox"
)

type fakeSource struct{ pods []sandbox.PodStats }

func (f fakeSource) AllStats() []sandbox.PodStats { return f.pods }
func (f fakeSource) NodeStats() sandbox.CgroupStats {
	return sandbox.CgroupStats{CPUUsageNanos: 5e9, HaveCPU: true, WorkingSet: 1 << 30, HaveM: true}
}

func TestNodeCollector(t *testing.T) {
	started := time.Unix(1700000000, 0)
	cg := sandbox.CgroupStats{CPUUsageNanos: 1500000000, HaveCPU: true, WorkingSet: 4096, RSS: 2048, MemoryUsage: 8192, HaveM: true}
	src := fakeSource{pods: []sandbox.PodStats{{
		ID: "sb1", Name: "web", Namespace: "prod", Ready: true, CreatedAt: started, CgroupParent: "/peapod/podu1", Cgroup: cg,
		Network: sandbox.NetworkStats{Interfaces: []sandbox.InterfaceStats{{Name: "eth0", RxBytes: 100, TxBytes: 50}}},
		Containers: []sandbox.ContainerStats{
			{ID: "c1", Name: "nginx", Image: "docker.io/library/nginx:1", State: runtimeapi.ContainerState_CONTAINER_RUNNING, Attempt: 2,
				StartedAt: started, CgroupsPath: "/peapod/podu1/c1", Cgroup: cg, WritableLayer: sandbox.FsUsage{Bytes: 12288}},
			{ID: "c0", Name: "nginx", State: runtimeapi.ContainerState_CONTAINER_EXITED, Attempt: 1},
		},
	}, {
		ID: "sb2", Name: "gone", Namespace: "prod", Ready: false,
	}}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewNodeCollector(src))
	want := `
# HELP container_cpu_usage_seconds_total Cumulative CPU time consumed, in seconds.
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="",id="/peapod/podu1",image="",namespace="prod",pod="web"} 1.5
container_cpu_usage_seconds_total{container="nginx",id="/peapod/podu1/c1",image="docker.io/library/nginx:1",namespace="prod",pod="web"} 1.5
# HELP container_fs_usage_bytes Bytes used by the container's writable layer.
# TYPE container_fs_usage_bytes gauge
container_fs_usage_bytes{container="nginx",id="/peapod/podu1/c1",image="docker.io/library/nginx:1",namespace="prod",pod="web"} 12288
# HELP container_network_receive_bytes_total Cumulative bytes received, per pod interface.
# TYPE container_network_receive_bytes_total counter
container_network_receive_bytes_total{container="",id="/peapod/podu1",image="",interface="eth0",namespace="prod",pod="web"} 100
# HELP container_network_transmit_bytes_total Cumulative bytes transmitted, per pod interface.
# TYPE container_network_transmit_bytes_total counter
container_network_transmit_bytes_total{container="",id="/peapod/podu1",image="",interface="eth0",namespace="prod",pod="web"} 50
# HELP container_memory_working_set_bytes Current working set (usage minus inactive file pages), in bytes.
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="",id="/peapod/podu1",image="",namespace="prod",pod="web"} 4096
container_memory_working_set_bytes{container="nginx",id="/peapod/podu1/c1",image="docker.io/library/nginx:1",namespace="prod",pod="web"} 4096
# HELP container_start_time_seconds Start time of the container (pod-level: of the sandbox) since the Unix epoch, in seconds.
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="",id="/peapod/podu1",image="",namespace="prod",pod="web"} 1.7e+09
container_start_time_seconds{container="nginx",id="/peapod/podu1/c1",image="docker.io/library/nginx:1",namespace="prod",pod="web"} 1.7e+09
# HELP node_cpu_usage_seconds_total Cumulative CPU time of the whole node (root cgroup), in seconds.
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 5
# HELP peapod_cri_container_restarts Restarts of a pod's container as the CRI caller counts them: metadata.attempt of its newest container.
# TYPE peapod_cri_container_restarts gauge
peapod_cri_container_restarts{container="nginx",namespace="prod",pod="web"} 2
# HELP peapod_running_containers Containers by state (created, running, exited, unknown).
# TYPE peapod_running_containers gauge
peapod_running_containers{container_state="created"} 0
peapod_running_containers{container_state="exited"} 1
peapod_running_containers{container_state="running"} 1
peapod_running_containers{container_state="unknown"} 0
# HELP peapod_running_pods Pod sandboxes in the READY state.
# TYPE peapod_running_pods gauge
peapod_running_pods 1
`
	text := gatherText(t, reg)
	for _, line := range strings.Split(strings.TrimSpace(want), "\n") {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("exposition lacks %q", line)
		}
	}
	for _, name := range []string{"container_memory_rss{", "node_memory_working_set_bytes ", "peapod_node_stats_collect_duration_seconds "} {
		if !strings.Contains(text, name) {
			t.Errorf("exposition lacks %s", name)
		}
	}
	if strings.Contains(text, `pod="gone"`) {
		t.Errorf("a NOTREADY pod has usage series:\n%s", text)
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", text)
	}
}

func gatherText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}
