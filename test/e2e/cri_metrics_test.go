package e2e

import (
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCRIMetrics: ListMetricDescriptors and ListPodSandboxMetrics serve the
// cAdvisor-named series of a running pod and its container, each with as
// many label values as its descriptor has keys (the kubelet builds its
// /metrics/cadvisor from exactly that).
func TestCRIMetrics(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}, agentDisabled: true})
	pullBusybox(t, d)
	ctx := d.ctx()
	cfg := podConfig(d, "crimetrics")
	run, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	cr, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: containerConfig("app", "sleep", "300"), SandboxConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	descs, err := d.rt.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatalf("ListMetricDescriptors: %v", err)
	}
	keys := map[string]int{}
	for _, dsc := range descs.Descriptors {
		keys[dsc.Name] = len(dsc.LabelKeys)
	}
	for _, want := range []string{"container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_network_receive_bytes_total"} {
		if _, ok := keys[want]; !ok {
			t.Errorf("no descriptor %s", want)
		}
	}
	resp, err := d.rt.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatalf("ListPodSandboxMetrics: %v", err)
	}
	var pm *runtimeapi.PodSandboxMetrics
	for _, p := range resp.PodMetrics {
		if p.PodSandboxId == run.PodSandboxId {
			pm = p
		}
	}
	if pm == nil || len(pm.ContainerMetrics) != 1 || pm.ContainerMetrics[0].ContainerId != cr.ContainerId {
		t.Fatalf("pod metrics: %v", resp.PodMetrics)
	}
	seen := map[string]uint64{}
	for _, m := range append(pm.Metrics, pm.ContainerMetrics[0].Metrics...) {
		if n, ok := keys[m.Name]; !ok || n != len(m.LabelValues) {
			t.Errorf("%s: %d label values, descriptor has %d keys (known %v)", m.Name, len(m.LabelValues), n, ok)
		}
		if len(m.LabelValues) > 3 && m.LabelValues[3] == cr.ContainerId {
			seen[m.Name] = m.Value.GetValue()
		}
	}
	if seen["container_memory_working_set_bytes"] == 0 || seen["container_start_time_seconds"] == 0 {
		t.Errorf("container series: %v", seen)
	}
}
