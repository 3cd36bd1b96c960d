package main

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

var inf = math.Inf(1)

func TestQuantile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bounds []float64
		counts []float64
		q      float64
		want   float64
	}{
		{"p50 at the top of a bucket", []float64{0.5, 1, 2, inf}, []float64{0, 10, 20, 20}, 0.5, 1},
		{"p99 interpolated", []float64{0.5, 1, 2, inf}, []float64{0, 10, 20, 20}, 0.99, 1.98},
		{"p100 is the top of the last filled bucket", []float64{0.5, 1, 2, inf}, []float64{0, 10, 20, 20}, 1, 2},
		{"lowest bucket starts at 0", []float64{0.5, 1, inf}, []float64{4, 4, 4}, 0.5, 0.25},
		{"in the +Inf bucket: highest finite bound", []float64{0.5, 1, inf}, []float64{0, 1, 4}, 0.5, 1},
		{"one sample, p99", []float64{0.5, 1, 2, 3, inf}, []float64{0, 0, 0, 1, 1}, 0.99, 2.99},
		{"no observation", []float64{0.5, 1, inf}, []float64{0, 0, 0}, 0.5, math.NaN()},
		{"no +Inf bucket", []float64{0.5, 1}, []float64{1, 2}, 0.5, math.NaN()},
		{"q above 1", []float64{0.5, 1, inf}, []float64{1, 2, 2}, 1.5, inf},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := histogram{bounds: tc.bounds, counts: tc.counts, count: tc.counts[len(tc.counts)-1]}
			got := h.quantile(tc.q)
			if math.IsNaN(tc.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-tc.want) > 1e-9) {
				t.Errorf("quantile(%g) = %g, want %g", tc.q, got, tc.want)
			}
		})
	}
}

// kubeletText is the shape of the kubelet's /metrics for the families read
// (v1.37: both ALPHA), with a family of another type in between.
func kubeletText(sli [4]int, sliSum float64, runs, lists int, runSum float64) string {
	var b strings.Builder
	b.WriteString(`# HELP kubelet_pod_start_sli_duration_seconds [ALPHA] Duration in seconds to start a pod, excluding time to pull images and run init containers, measured from pod creation timestamp to when all its containers are reported as started and observed via watch
# TYPE kubelet_pod_start_sli_duration_seconds histogram
`)
	for i, le := range []string{"0.5", "1", "2", "+Inf"} {
		b.WriteString(`kubelet_pod_start_sli_duration_seconds_bucket{le="` + le + `"} ` + itoa(sli[i]) + "\n")
	}
	b.WriteString("kubelet_pod_start_sli_duration_seconds_sum " + ftoa(sliSum) + "\n")
	b.WriteString("kubelet_pod_start_sli_duration_seconds_count " + itoa(sli[3]) + "\n")
	b.WriteString(`# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox
# TYPE kubelet_running_pods gauge
kubelet_running_pods 3
# HELP kubelet_runtime_operations_total [ALPHA] Cumulative number of runtime operations by operation type.
# TYPE kubelet_runtime_operations_total counter
kubelet_runtime_operations_total{operation_type="list_podsandbox"} ` + itoa(lists) + `
kubelet_runtime_operations_total{operation_type="run_podsandbox"} ` + itoa(runs) + `
# HELP kubelet_runtime_operations_duration_seconds [ALPHA] Duration in seconds of runtime operations. Broken down by operation type.
# TYPE kubelet_runtime_operations_duration_seconds histogram
kubelet_runtime_operations_duration_seconds_bucket{operation_type="run_podsandbox",le="0.005"} 0
kubelet_runtime_operations_duration_seconds_bucket{operation_type="run_podsandbox",le="+Inf"} ` + itoa(runs) + `
kubelet_runtime_operations_duration_seconds_sum{operation_type="run_podsandbox"} ` + ftoa(runSum) + `
kubelet_runtime_operations_duration_seconds_count{operation_type="run_podsandbox"} ` + itoa(runs) + `
`)
	return b.String()
}

func TestParseMetrics(t *testing.T) {
	for _, tc := range []struct {
		name      string
		text      string
		wantErr   bool
		wantCount float64
		wantP50   float64
		wantOps   map[string]float64
		// peapod-agent's own pod start histogram
		wantAgentCount float64
		wantAgentMean  float64
	}{
		{
			name:      "both families",
			text:      kubeletText([4]int{1, 3, 5, 5}, 4.5, 5, 120, 1.5),
			wantCount: 5, wantP50: 0.875,
			wantOps: map[string]float64{"run_podsandbox": 5, "list_podsandbox": 120},
		},
		{
			name:      "a kubelet that started no pod: no SLI samples",
			text:      "# TYPE kubelet_runtime_operations_total counter\nkubelet_runtime_operations_total{operation_type=\"version\"} 2\n",
			wantCount: 0, wantP50: math.NaN(),
			wantOps: map[string]float64{"version": 2},
		},
		{
			name: "peapod-agent's: its own pod start histogram, none of the kubelet's families",
			text: `# HELP peapod_pod_start_duration_seconds Time from the agent's pod worker start to all of the pod's containers running.
# TYPE peapod_pod_start_duration_seconds histogram
peapod_pod_start_duration_seconds_bucket{le="0.1"} 0
peapod_pod_start_duration_seconds_bucket{le="0.25"} 4
peapod_pod_start_duration_seconds_bucket{le="0.5"} 5
peapod_pod_start_duration_seconds_bucket{le="+Inf"} 5
peapod_pod_start_duration_seconds_sum 1.1
peapod_pod_start_duration_seconds_count 5
# TYPE peapod_container_restarts_total counter
peapod_container_restarts_total{container="httpd",namespace="default",pod="bench-1"} 0
`,
			wantCount: 0, wantP50: math.NaN(),
			wantOps:        map[string]float64{},
			wantAgentCount: 5, wantAgentMean: 0.22,
		},
		{
			name:    "pod start histogram of another type",
			text:    "# TYPE peapod_pod_start_duration_seconds gauge\npeapod_pod_start_duration_seconds 1\n",
			wantErr: true,
		},
		{
			name:    "not the text format",
			text:    "kubelet_runtime_operations_total{operation_type=\"version\" 2\n",
			wantErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseMetrics(strings.NewReader(tc.text))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %t", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if s.sli.count != tc.wantCount {
				t.Errorf("SLI count %g, want %g", s.sli.count, tc.wantCount)
			}
			if p := s.sli.quantile(0.5); math.IsNaN(p) != math.IsNaN(tc.wantP50) || (!math.IsNaN(p) && math.Abs(p-tc.wantP50) > 1e-9) {
				t.Errorf("SLI p50 %g, want %g", p, tc.wantP50)
			}
			if len(s.ops) != len(tc.wantOps) {
				t.Errorf("ops %v, want %v", s.ops, tc.wantOps)
			}
			if s.agentStart.count != tc.wantAgentCount {
				t.Errorf("agent pod start count %g, want %g", s.agentStart.count, tc.wantAgentCount)
			}
			if tc.wantAgentCount > 0 && math.Abs(s.agentStart.mean()-tc.wantAgentMean) > 1e-9 {
				t.Errorf("agent pod start mean %g, want %g", s.agentStart.mean(), tc.wantAgentMean)
			}
			for op, v := range tc.wantOps {
				if s.ops[op] != v {
					t.Errorf("ops[%s] = %g, want %g", op, s.ops[op], v)
				}
			}
		})
	}
}

func TestSince(t *testing.T) {
	parse := func(text string) snapshot {
		t.Helper()
		s, err := parseMetrics(strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	noSLI := "# TYPE kubelet_runtime_operations_total counter\nkubelet_runtime_operations_total{operation_type=\"list_podsandbox\"} 100\n"
	for _, tc := range []struct {
		name          string
		before, after string
		wantErr       bool
		wantCounts    []float64 // cumulative, per bucket
		wantOps       map[string]float64
		wantRunMean   float64
	}{
		{
			name:        "warm-up pod subtracted",
			before:      kubeletText([4]int{0, 1, 1, 1}, 0.8, 1, 100, 0.1),
			after:       kubeletText([4]int{2, 5, 8, 8}, 9.8, 8, 150, 0.8),
			wantCounts:  []float64{2, 4, 7, 7},
			wantOps:     map[string]float64{"run_podsandbox": 7, "list_podsandbox": 50},
			wantRunMean: 0.1,
		},
		{
			name:        "no SLI family before: all of after",
			before:      noSLI,
			after:       kubeletText([4]int{0, 2, 3, 3}, 3, 3, 130, 0.3),
			wantCounts:  []float64{0, 2, 3, 3},
			wantOps:     map[string]float64{"run_podsandbox": 3, "list_podsandbox": 30},
			wantRunMean: 0.1,
		},
		{
			name:    "counter went down: kubelet restarted",
			before:  kubeletText([4]int{0, 1, 1, 1}, 0.8, 5, 100, 0.5),
			after:   kubeletText([4]int{0, 1, 1, 1}, 0.8, 2, 10, 0.2),
			wantErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := parse(tc.after).since(parse(tc.before))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %t", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if len(d.sli.counts) != len(tc.wantCounts) {
				t.Fatalf("SLI buckets %v, want %v", d.sli.counts, tc.wantCounts)
			}
			for i := range tc.wantCounts {
				if d.sli.counts[i] != tc.wantCounts[i] {
					t.Errorf("SLI buckets %v, want %v", d.sli.counts, tc.wantCounts)
					break
				}
			}
			if d.sli.count != tc.wantCounts[len(tc.wantCounts)-1] {
				t.Errorf("SLI count %g, want %g", d.sli.count, tc.wantCounts[len(tc.wantCounts)-1])
			}
			for op, v := range tc.wantOps {
				if d.ops[op] != v {
					t.Errorf("ops[%s] = %g, want %g", op, d.ops[op], v)
				}
			}
			if m := d.opMean["run_podsandbox"]; math.Abs(m-tc.wantRunMean) > 1e-9 {
				t.Errorf("run_podsandbox mean %g, want %g", m, tc.wantRunMean)
			}
		})
	}
}

func TestCounterDelta(t *testing.T) {
	for _, tc := range []struct {
		name    string
		a, b    map[string]float64
		want    map[string]float64
		wantErr bool
	}{
		{"new key counts in full", map[string]float64{"x": 1}, map[string]float64{"x": 3, "y": 2}, map[string]float64{"x": 2, "y": 2}, false},
		{"unchanged is 0", map[string]float64{"x": 4}, map[string]float64{"x": 4}, map[string]float64{"x": 0}, false},
		{"went down", map[string]float64{"x": 4}, map[string]float64{"x": 1}, nil, true},
		{"gone", map[string]float64{"x": 4}, map[string]float64{}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := counterDelta(tc.a, tc.b)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %t", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func itoa(n int) string     { return strconv.Itoa(n) }
func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
