package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"peapod/hack/cluster/harness"
)

// peapod-agent neither counts nor times its CRI calls; peapod counts every
// call it serves, whoever makes it (metrics/grpc.go, one interceptor):
// peapod_cri_request_duration_seconds by method. With the agent as node,
// the agent is peapod's only CRI client while the workload runs, but for
// this bench's own ListPodSandbox polls during the delete, which it counts
// and subtracts. peapod times a call in its server, without the client's
// gRPC and transport: not the figure the kubelet times, so the table shows
// no duration for the agent.
const (
	runtimeCRIMetric = "peapod_cri_request_duration_seconds"
	methodLabel      = "method"
	listPodSandboxOp = "list_podsandbox"
)

// criOperations names each CRI method as the kubelet's
// kubelet_runtime_operations_total labels it (pkg/kubelet/kuberuntime/
// instrumented_services.go, v1.37): the rows of the table are the same for
// every node agent.
var criOperations = map[string]string{
	"Version":                   "version",
	"Status":                    "status",
	"RuntimeConfig":             "runtime_config",
	"UpdateRuntimeConfig":       "update_runtime_config",
	"RunPodSandbox":             "run_podsandbox",
	"StopPodSandbox":            "stop_podsandbox",
	"RemovePodSandbox":          "remove_podsandbox",
	"PodSandboxStatus":          "podsandbox_status",
	"ListPodSandbox":            "list_podsandbox",
	"PodSandboxStats":           "podsandbox_stats",
	"ListPodSandboxStats":       "list_podsandbox_stats",
	"ListPodSandboxMetrics":     "list_podsandbox_metrics",
	"UpdatePodSandboxResources": "update_podsandbox_resources",
	"PortForward":               "port_forward",
	"CreateContainer":           "create_container",
	"StartContainer":            "start_container",
	"StopContainer":             "stop_container",
	"RemoveContainer":           "remove_container",
	"ListContainers":            "list_containers",
	"ContainerStatus":           "container_status",
	"UpdateContainerResources":  "update_container",
	"ReopenContainerLog":        "reopen_container_log",
	"ExecSync":                  "exec_sync",
	"Exec":                      "exec",
	"Attach":                    "attach",
	"ContainerStats":            "container_stats",
	"ListContainerStats":        "list_container_stats",
	"CheckpointContainer":       "checkpoint_container",
	"CheckpointPod":             "checkpoint_pod",
	"RestorePod":                "restore_pod",
	"GetContainerEvents":        "get_container_events",
	"ListMetricDescriptors":     "list_metric_descriptors",
	"ListImages":                "list_images",
	"ImageStatus":               "image_status",
	"PullImage":                 "pull_image",
	"RemoveImage":               "remove_image",
	"ImageFsInfo":               "image_fs_info",
}

// operationOf is the kubelet's name of a CRI method; a method the kubelet
// does not know keeps its own name (a row of its own in the table).
func operationOf(method string) string {
	if op, ok := criOperations[method]; ok {
		return op
	}
	return method
}

// parseRuntimeCRI reads peapod's /metrics: the CRI calls it served, by
// operation as the kubelet names it (the histogram's count), and their
// durations' sum and count.
func parseRuntimeCRI(r io.Reader) (snapshot, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return snapshot{}, fmt.Errorf("parse peapod metrics: %w", err)
	}
	s := snapshot{ops: map[string]float64{}, opSum: map[string]float64{}, opCount: map[string]float64{}}
	f := fams[runtimeCRIMetric]
	if f == nil {
		return s, nil // no CRI call yet
	}
	if f.GetType() != dto.MetricType_HISTOGRAM {
		return s, fmt.Errorf("%s: type %s, want histogram", runtimeCRIMetric, f.GetType())
	}
	for _, m := range f.GetMetric() {
		method := label(m, methodLabel)
		if method == "" {
			return s, fmt.Errorf("%s: a series without %s", runtimeCRIMetric, methodLabel)
		}
		op := operationOf(method)
		n := histCount(m.GetHistogram())
		s.ops[op] += n
		s.opCount[op] += n
		s.opSum[op] += m.GetHistogram().GetSampleSum()
	}
	return s, nil
}

// subtractCalls takes n calls of op, made by someone other than the node
// agent, off ops.
func subtractCalls(ops map[string]float64, op string, n float64) error {
	if n == 0 {
		return nil
	}
	if ops[op] < n {
		return fmt.Errorf("%s: the runtime counted %g calls, fewer than the bench's own %g", op, ops[op], n)
	}
	ops[op] -= n
	return nil
}

// httpAddressRE is the line peapod logs when its HTTP endpoint listens
// (metrics/http.go): the harness gives it 127.0.0.1:0.
var httpAddressRE = regexp.MustCompile(`"HTTP endpoint listening" address="([^"]+)"`)

// httpAddressFromLog is the address of the last such line in log (that of
// the running process, were peapod restarted).
func httpAddressFromLog(log []byte) (string, error) {
	all := httpAddressRE.FindAllSubmatch(log, -1)
	if len(all) == 0 {
		return "", fmt.Errorf("no %q line", "HTTP endpoint listening")
	}
	return string(all[len(all)-1][1]), nil
}

// runtimeMetrics scrapes peapod's /metrics on 127.0.0.1.
type runtimeMetrics struct {
	url string
	hc  *http.Client
}

// newRuntimeMetrics finds peapod's HTTP address in its log (it logs the
// line before the node can turn Ready; waited for a little all the same).
func newRuntimeMetrics(c *harness.Cluster) (*runtimeMetrics, error) {
	var logPath string
	for _, p := range c.Components {
		if p.Name == "peapod" {
			logPath = p.Log
		}
	}
	if logPath == "" {
		return nil, fmt.Errorf("no peapod log recorded in %s/cluster.json", c.Dir)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(logPath)
		if err != nil {
			return nil, err
		}
		addr, err := httpAddressFromLog(b)
		if err == nil {
			return &runtimeMetrics{url: "http://" + addr + "/metrics", hc: &http.Client{Timeout: 60 * time.Second}}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("peapod's HTTP address: %s: %w", logPath, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (m *runtimeMetrics) close() { m.hc.CloseIdleConnections() }

func (m *runtimeMetrics) get(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := m.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", m.url, resp.Status)
	}
	return b, nil
}
