package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/hack/testenv"
)

// sample is one series line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseExposition reads the text format loosely: enough for the label
// values peapod writes (no escaped quotes or commas in them).
func parseExposition(text string) []sample {
	var out []sample
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			s.name = line[:i]
			for _, kv := range strings.Split(line[i+1:j], ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					s.labels[k] = strings.Trim(v, `"`)
				}
			}
			rest = strings.TrimSpace(line[j+1:])
		} else {
			s.name, rest, _ = strings.Cut(line, " ")
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			continue
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

// find returns the samples of name whose labels include want.
func find(samples []sample, name string, want map[string]string) []sample {
	var out []sample
	for _, s := range samples {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range want {
			if s.labels[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

func (d *daemon) scrape(t *testing.T) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := http.Get("http://" + d.httpAddr() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	return string(body), time.Since(start)
}

// TestNodeMetrics: a running pod shows up on /metrics under the cAdvisor
// names and labels (CPU, memory, writable layer, network read from the pod
// netns, start times), with the runtime's pod start histogram and counts;
// the CRI stats calls are served from the same one-second cache; and a real
// Prometheus scrapes the endpoint and answers PromQL queries about the pod.
func TestNodeMetrics(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	pullBusybox(t, d)
	ctx := d.ctx()

	pod := podConfig(d, "metered")
	podID := runPod(t, d, pod)
	cc := containerConfig("web", "sh", "-c", "mkdir -p /www && echo hello > /www/index.html && dd if=/dev/zero of=/big bs=1k count=512 2>/dev/null; exec httpd -f -p 8080 -h /www")
	cid := startContainer(t, d, podID, pod, cc)
	waitState(t, d, cid, runtimeapi.ContainerState_CONTAINER_RUNNING)
	st, err := d.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	podIP := st.Status.Network.Ip
	cst, err := d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cid})
	if err != nil {
		t.Fatal(err)
	}
	// Traffic into the pod over our own bridge: the pod's eth0 counters move.
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + net.JoinHostPort(podIP, "8080") + "/index.html")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET from the pod's httpd: %v", err)
		}
	}
	if strings.TrimSpace(string(body)) != "hello" {
		t.Fatalf("pod httpd answered %q", body)
	}
	// The figures are cached for up to a second: wait that out once.
	time.Sleep(sandboxStatsMaxAge)

	text, took := d.scrape(t)
	t.Logf("scrape with 1 pod: %v, %d bytes", took, len(text))
	samples := parseExposition(text)
	ctr := map[string]string{"container": "web", "pod": "metered", "namespace": "e2e", "image": busybox}
	for _, name := range []string{"container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_memory_rss",
		"container_fs_usage_bytes", "container_start_time_seconds"} {
		got := find(samples, name, ctr)
		if len(got) != 1 {
			t.Errorf("%s%v: %d series, want 1", name, ctr, len(got))
			continue
		}
		if !strings.HasSuffix(got[0].labels["id"], "/"+cid) {
			t.Errorf("%s: id=%q, want the cgroup path of %s", name, got[0].labels["id"], cid)
		}
		if got[0].value <= 0 && name != "container_memory_rss" {
			t.Errorf("%s = %v, want > 0", name, got[0].value)
		}
	}
	if got := find(samples, "container_fs_usage_bytes", ctr); len(got) == 1 && got[0].value < 512<<10 {
		t.Errorf("container_fs_usage_bytes = %v, want the 512 KiB written", got[0].value)
	}
	if got := find(samples, "container_start_time_seconds", ctr); len(got) == 1 && int64(got[0].value) != cst.Status.StartedAt/1e9 {
		t.Errorf("container_start_time_seconds = %v, want %d", got[0].value, cst.Status.StartedAt/1e9)
	}
	podLevel := map[string]string{"container": "", "pod": "metered", "namespace": "e2e", "image": ""}
	for _, name := range []string{"container_network_receive_bytes_total", "container_network_transmit_bytes_total"} {
		got := find(samples, name, podLevel)
		if len(got) != 1 || got[0].labels["interface"] != "eth0" || got[0].value <= 0 {
			t.Errorf("%s%v = %+v, want one eth0 series > 0", name, podLevel, got)
		}
	}
	if got := find(samples, "container_cpu_usage_seconds_total", podLevel); len(got) != 1 {
		t.Errorf("no pod-level CPU series: %+v", got)
	}
	for name, want := range map[string]float64{
		"peapod_running_pods":                         1,
		"peapod_cri_pod_start_duration_seconds_count": 1,
	} {
		if got := find(samples, name, nil); len(got) != 1 || got[0].value != want {
			t.Errorf("%s = %+v, want %v", name, got, want)
		}
	}
	if got := find(samples, "peapod_running_containers", map[string]string{"container_state": "running"}); len(got) != 1 || got[0].value != 1 {
		t.Errorf("peapod_running_containers{running} = %+v, want 1", got)
	}
	if got := find(samples, "peapod_cri_container_restarts", map[string]string{"container": "web", "pod": "metered"}); len(got) != 1 || got[0].value != 0 {
		t.Errorf("peapod_cri_container_restarts = %+v, want 0", got)
	}
	for _, name := range []string{"node_cpu_usage_seconds_total", "node_memory_working_set_bytes"} {
		if got := find(samples, name, nil); len(got) != 1 || got[0].value <= 0 {
			t.Errorf("%s = %+v", name, got)
		}
	}
	// pprof is off unless http.pprof is set.
	if resp, err := http.Get("http://" + d.httpAddr() + "/debug/pprof/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("/debug/pprof/ without http.pprof: %s", resp.Status)
		}
	}

	// The CRI stats calls read the same cache: within a second, the same
	// reading (same timestamp) as the scrape; the pod's network too.
	same := false
	for i := 0; i < 5 && !same; i++ {
		text, _ := d.scrape(t)
		cpu := find(parseExposition(text), "container_cpu_usage_seconds_total", ctr)
		ls, err := d.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
		if err != nil || len(ls.Stats) != 1 || len(cpu) != 1 {
			t.Fatalf("ListContainerStats = %v, %v", ls, err)
		}
		same = float64(ls.Stats[0].Cpu.UsageCoreNanoSeconds.Value)/1e9 == cpu[0].value
	}
	if !same {
		t.Errorf("ListContainerStats and /metrics never agreed: not one cache")
	}
	ps, err := d.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
	if err != nil || len(ps.Stats) != 1 {
		t.Fatalf("ListPodSandboxStats = %v, %v", ps, err)
	}
	if n := ps.Stats[0].Linux.GetNetwork().GetDefaultInterface(); n.GetName() != "eth0" || n.GetRxBytes().GetValue() == 0 {
		t.Errorf("PodSandboxStats network = %v, want eth0 with bytes received", ps.Stats[0].Linux.GetNetwork())
	}
	if len(ps.Stats[0].Linux.Containers) != 1 {
		t.Errorf("PodSandboxStats containers = %v", ps.Stats[0].Linux.Containers)
	}

	// A real Prometheus scrapes peapod; PromQL finds the pod.
	prom := startPrometheus(t, d.httpAddr())
	queries := map[string]func(r promResult) error{
		`container_memory_working_set_bytes{namespace="e2e",pod="metered",container="web"}`: oneSeries("image", busybox),
		`sum by (pod) (container_network_receive_bytes_total{namespace="e2e"})`:             oneSeries("pod", "metered"),
		`rate(container_cpu_usage_seconds_total{pod="metered",container="web"}[10s])`:       oneSeries("container", "web"),
		`peapod_running_pods`: oneSeries("", ""),
		`histogram_quantile(0.5, sum by (le) (peapod_cri_pod_start_duration_seconds_bucket))`: oneSeries("", ""),
		`sum by (method) (peapod_cri_request_duration_seconds_count{method="RunPodSandbox"})`: oneSeries("method", "RunPodSandbox"),
	}
	for q, check := range queries {
		var lastErr error
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			r, err := prom.query(q)
			if err == nil {
				err = check(r)
			}
			if err == nil {
				t.Logf("PromQL %s: %v", q, r.Data.Result[0].Value)
				break
			}
			lastErr = err
			if time.Now().After(deadline) {
				t.Errorf("PromQL %s: %v", q, lastErr)
				break
			}
		}
	}
	checkDashboard(t, prom)
}

// checkDashboard runs every query of hack/grafana/peapod-node.json, with
// its variables set to match all, against prom: each must parse and
// evaluate; the per-pod panels must find the pod.
func checkDashboard(t *testing.T, prom prometheus) {
	t.Helper()
	data, err := os.ReadFile("../../hack/grafana/peapod-node.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	vars := strings.NewReplacer("$job", ".*", "$namespace", ".*", "$pod", ".*", "$__rate_interval", "10s")
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			q := vars.Replace(tg.Expr)
			r, err := prom.query(q)
			if err != nil {
				t.Errorf("dashboard panel %q: %s: %v", p.Title, q, err)
				continue
			}
			n++
			if strings.Contains(p.Title, "per pod") && len(r.Data.Result) == 0 {
				t.Errorf("dashboard panel %q: %s: no series", p.Title, q)
			}
		}
	}
	t.Logf("dashboard: %d queries evaluated", n)
}

// sandboxStatsMaxAge mirrors sandbox.StatsMaxAge (e2e drives the binary,
// not the package).
const sandboxStatsMaxAge = time.Second

type promResult struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

func oneSeries(label, value string) func(promResult) error {
	return func(r promResult) error {
		if len(r.Data.Result) != 1 {
			return fmt.Errorf("%d series, want 1: %+v", len(r.Data.Result), r.Data.Result)
		}
		if v := r.Data.Result[0].Value; len(v) != 2 || v[1] == "NaN" {
			return fmt.Errorf("value %v", v)
		}
		if label != "" && r.Data.Result[0].Metric[label] != value {
			return fmt.Errorf("%s=%q, want %q", label, r.Data.Result[0].Metric[label], value)
		}
		return nil
	}
}

type prometheus struct{ addr string }

func (p prometheus) query(q string) (promResult, error) {
	var r promResult
	resp, err := http.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, err
	}
	if r.Status != "success" {
		return r, fmt.Errorf("%s: %s", r.Status, r.Error)
	}
	return r, nil
}

// startPrometheus runs Debian's prometheus on a free 127.0.0.1 port with
// its data in a temp dir, scraping target every second; stopped by PID.
func startPrometheus(t *testing.T, target string) prometheus {
	t.Helper()
	testenv.Require(t, "/usr/bin/prometheus", "prometheus")
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: peapod
  static_configs:
  - targets: [%q]
`, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("/usr/bin/prometheus",
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--web.console.templates="+filepath.Join(dir, "none"),
		"--web.console.libraries="+filepath.Join(dir, "none"),
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			data, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", data)
		}
	})
	p := prometheus{addr: addr}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus did not become ready")
		}
	}
}
