package stats

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The text metrics-server v0.9 parses: the kubelet's names, help texts with
// their stability prefix, labels in Prometheus' sorted order, and each
// usage sample stamped with the time the runtime (or this node) measured it
// (milliseconds); container_start_time_seconds and the error gauge carry
// no timestamp, as the kubelet's.
const wantResourceMetrics = `# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="default",pod="web"} 2.5 1799999999000
container_cpu_usage_seconds_total{container="sidecar",namespace="default",pod="web"} 1 1799999999000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",namespace="default",pod="web"} 2.097152e+07 1799999999000
container_memory_working_set_bytes{container="coredns",namespace="kube-system",pod="coredns-abc"} 8.388608e+06 1799999999000
container_memory_working_set_bytes{container="sidecar",namespace="default",pod="web"} 1.048576e+07 1799999999000
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="app",namespace="default",pod="web"} 1.7999991e+09
container_start_time_seconds{container="coredns",namespace="kube-system",pod="coredns-abc"} 1.7999996e+09
container_start_time_seconds{container="sidecar",namespace="default",pod="web"} 1.7999992005e+09
# HELP container_swap_limit_bytes [ALPHA] Current amount of the container swap limit in bytes. Reported only on non-windows systems
# TYPE container_swap_limit_bytes gauge
container_swap_limit_bytes{container="sidecar",namespace="default",pod="web"} 1.052672e+06 1799999999000
# HELP container_swap_usage_bytes [ALPHA] Current amount of the container swap usage in bytes. Reported only on non-windows systems
# TYPE container_swap_usage_bytes gauge
container_swap_usage_bytes{container="sidecar",namespace="default",pod="web"} 4096 1799999999000
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 9460.65 1800000000000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 3.084222464e+09 1800000000000
# HELP node_swap_usage_bytes [ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems
# TYPE node_swap_usage_bytes gauge
node_swap_usage_bytes 4.194304e+06 1800000000000
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="default",pod="web"} 3.5 1799999999000
pod_cpu_usage_seconds_total{namespace="kube-system",pod="coredns-abc"} 0.25 1799999999000
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="default",pod="web"} 3.145728e+07 1799999999000
pod_memory_working_set_bytes{namespace="kube-system",pod="coredns-abc"} 8.388608e+06 1799999999000
# HELP pod_swap_usage_bytes [ALPHA] Current amount of the pod swap usage in bytes. Reported only on non-windows systems
# TYPE pod_swap_usage_bytes gauge
pod_swap_usage_bytes{namespace="default",pod="web"} 4096 1799999999000
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
`

func scrape(t *testing.T, h http.Handler, method, target string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec.Code, rec.Body.String()
}

func TestResourceMetrics(t *testing.T) {
	for _, tc := range []struct {
		name string
		// edit changes the fixture runtime
		edit func(*fakeRuntime)
		want string
	}{{
		name: "pods from ListPodSandboxStats",
		edit: func(*fakeRuntime) {},
		want: wantResourceMetrics,
	}, {
		name: "the runtime fails: only the error gauge",
		edit: func(f *fakeRuntime) { f.sandboxStatsErr = errors.New("runtime is down") },
		want: "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n" +
			"# TYPE resource_scrape_error gauge\nresource_scrape_error 1\n",
	}, {
		name: "no pods",
		edit: func(f *fakeRuntime) { f.sandboxes, f.containers, f.sandboxStats = nil, nil, nil },
		want: `# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 9460.65 1800000000000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 3.084222464e+09 1800000000000
# HELP node_swap_usage_bytes [ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems
# TYPE node_swap_usage_bytes gauge
node_swap_usage_bytes 4.194304e+06 1800000000000
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			rt := podFixture(t.TempDir())
			tc.edit(rt)
			p := newProvider(Options{NodeName: "n1", Runtime: rt, RootDir: t.TempDir()}, v1Host(t), func() time.Time { return testNow })
			code, body := scrape(t, p.ResourceMetrics(), http.MethodGet, "/metrics/resource")
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, body)
			}
			if body != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s\ndiff at: %s", body, tc.want, firstDiff(body, tc.want))
			}
		})
	}
}

func TestHandlerMethods(t *testing.T) {
	p := newProvider(Options{Runtime: podFixture(t.TempDir()), RootDir: t.TempDir()}, v1Host(t), func() time.Time { return testNow })
	for name, h := range map[string]http.Handler{"summary": p.Summary(), "resource": p.ResourceMetrics(), "cadvisor": p.CadvisorMetrics()} {
		if code, _ := scrape(t, h, http.MethodPut, "/"); code != http.StatusMethodNotAllowed {
			t.Errorf("%s: PUT answered %d, want 405", name, code)
		}
	}
	// The kubelet routes POST /stats/summary as GET.
	if code, body := scrape(t, p.Summary(), http.MethodPost, "/stats/summary"); code != http.StatusOK {
		t.Errorf("summary: POST answered %d %s", code, body)
	}
}

// firstDiff shows where two texts part, for a readable failure.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return "line " + al[i] + " | want " + bl[i]
		}
	}
	return "(one is a prefix of the other)"
}

// The three endpoints share the CPU and cgroup caches: scrape them at once
// (run with -race).
func TestConcurrentScrapes(t *testing.T) {
	rt := podFixture(t.TempDir())
	cm := criMetricsFixture()
	rt.descriptors, rt.metrics, rt.info = cm.descriptors, cm.metrics, cm.info
	p := newProvider(Options{Runtime: rt, RootDir: t.TempDir()}, v1Host(t), time.Now)
	done := make(chan struct{})
	for _, h := range []http.Handler{p.Summary(), p.ResourceMetrics(), p.CadvisorMetrics(), p.Summary()} {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 20 {
				if code, body := scrape(t, h, http.MethodGet, "/"); code != http.StatusOK {
					t.Errorf("%d %s", code, body)
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}
