package cri

import (
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox"
)

func TestPodSandboxMetrics(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	started := now.Add(-time.Minute)
	p := sandbox.PodStats{
		ID: "sb1", Name: "web", Namespace: "default", Ready: true, CreatedAt: now.Add(-2 * time.Minute),
		Cgroup:  sandbox.CgroupStats{CPUUsageNanos: 3_900_000_000, MemoryUsage: 30, WorkingSet: 20, RSS: 10, HaveCPU: true, HaveM: true},
		Network: sandbox.NetworkStats{Interfaces: []sandbox.InterfaceStats{{Name: "eth0", RxBytes: 100, TxBytes: 200}}},
		Containers: []sandbox.ContainerStats{
			{ID: "c1", Name: "app", Image: "busybox", State: runtimeapi.ContainerState_CONTAINER_RUNNING, StartedAt: started,
				Cgroup:        sandbox.CgroupStats{CPUUsageNanos: 2_000_000_001, WorkingSet: 5, HaveCPU: true, HaveM: true},
				WritableLayer: sandbox.FsUsage{Bytes: 4096}},
			{ID: "c0", Name: "old", Image: "busybox", State: runtimeapi.ContainerState_CONTAINER_EXITED},
		},
	}
	pm := podSandboxMetrics(p, now, fakeDetails{})
	if pm.PodSandboxId != "sb1" {
		t.Fatalf("id %q", pm.PodSandboxId)
	}
	keys := map[string]int{}
	for _, m := range allMetrics {
		keys[m.desc.Name] = len(m.desc.LabelKeys)
	}
	find := func(ms []*runtimeapi.Metric, name string, lv ...string) *runtimeapi.Metric {
		for _, m := range ms {
			if m.Name != name {
				continue
			}
			match := true
			for i, v := range lv {
				if m.LabelValues[i] != v {
					match = false
				}
			}
			if match {
				return m
			}
		}
		return nil
	}
	check := func(ms []*runtimeapi.Metric) {
		for _, m := range ms {
			n, ok := keys[m.Name]
			if !ok {
				t.Errorf("%s has no descriptor", m.Name)
			} else if len(m.LabelValues) != n {
				t.Errorf("%s: %d label values for %d keys", m.Name, len(m.LabelValues), n)
			}
		}
	}
	check(pm.Metrics)
	if m := find(pm.Metrics, "container_cpu_usage_seconds_total", "web", "default", "", "sb1", ""); m == nil || m.Value.Value != 3 || m.MetricType != runtimeapi.MetricType_COUNTER {
		t.Errorf("pod cpu: %v", m)
	}
	if m := find(pm.Metrics, "container_network_transmit_bytes_total", "web", "default", "", "sb1", "", "eth0"); m == nil || m.Value.Value != 200 {
		t.Errorf("pod tx bytes: %v", m)
	}
	if len(pm.ContainerMetrics) != 1 || pm.ContainerMetrics[0].ContainerId != "c1" {
		t.Fatalf("container metrics for %v, want only the running c1", pm.ContainerMetrics)
	}
	cm := pm.ContainerMetrics[0].Metrics
	check(cm)
	for name, want := range map[string]uint64{
		"container_cpu_usage_seconds_total":  2,
		"container_memory_working_set_bytes": 5,
		"container_fs_usage_bytes":           4096,
		"container_start_time_seconds":       uint64(started.Unix()),
		"container_last_seen":                uint64(now.Unix()),
		"container_oom_events_total":         1,
		"container_threads":                  2,
	} {
		if m := find(cm, name, "web", "default", "app", "c1", "busybox"); m == nil || m.Value.Value != want {
			t.Errorf("%s = %v, want %d", name, m, want)
		}
	}
}

type fakeDetails struct{}

func (fakeDetails) CgroupDetails(_ string, cg sandbox.CgroupStats) sandbox.CgroupStats {
	cg.Extra.OOMKills = 1
	return cg
}
func (fakeDetails) TaskCounts(string) sandbox.TaskCounts {
	return sandbox.TaskCounts{Processes: 1, Threads: 2}
}
