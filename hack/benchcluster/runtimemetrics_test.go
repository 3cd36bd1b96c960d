package main

import (
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
)

// peapodText is the shape of peapod's /metrics for the family read
// (metrics/grpc.go), count and sum by method, with a family of another
// type in between.
func peapodText(counts map[string]int, sums map[string]float64) string {
	var b strings.Builder
	b.WriteString(`# HELP peapod_cri_request_errors_total CRI calls that returned an error, by method and gRPC code.
# TYPE peapod_cri_request_errors_total counter
peapod_cri_request_errors_total{code="NotFound",method="ContainerStatus"} 1
# HELP peapod_cri_request_duration_seconds Latency of CRI calls by method.
# TYPE peapod_cri_request_duration_seconds histogram
`)
	for _, m := range slices.Sorted(maps.Keys(counts)) {
		n := itoa(counts[m])
		b.WriteString(`peapod_cri_request_duration_seconds_bucket{method="` + m + `",le="0.001"} 0` + "\n")
		b.WriteString(`peapod_cri_request_duration_seconds_bucket{method="` + m + `",le="+Inf"} ` + n + "\n")
		b.WriteString(`peapod_cri_request_duration_seconds_sum{method="` + m + `"} ` + ftoa(sums[m]) + "\n")
		b.WriteString(`peapod_cri_request_duration_seconds_count{method="` + m + `"} ` + n + "\n")
	}
	b.WriteString("# TYPE go_goroutines gauge\ngo_goroutines 42\n")
	return b.String()
}

func TestParseRuntimeCRI(t *testing.T) {
	for _, tc := range []struct {
		name    string
		text    string
		wantErr bool
		wantOps map[string]float64
		wantSum map[string]float64
	}{
		{
			name: "methods named as the kubelet's operation_type",
			text: peapodText(map[string]int{"RunPodSandbox": 5, "ListPodSandbox": 120, "UpdateContainerResources": 1, "ImageFsInfo": 2},
				map[string]float64{"RunPodSandbox": 1.5, "ListPodSandbox": 0.12}),
			wantOps: map[string]float64{"run_podsandbox": 5, "list_podsandbox": 120, "update_container": 1, "image_fs_info": 2},
			wantSum: map[string]float64{"run_podsandbox": 1.5, "list_podsandbox": 0.12, "update_container": 0, "image_fs_info": 0},
		},
		{
			name:    "a method the kubelet does not know keeps its name",
			text:    peapodText(map[string]int{"FutureCall": 3}, nil),
			wantOps: map[string]float64{"FutureCall": 3},
			wantSum: map[string]float64{"FutureCall": 0},
		},
		{
			name:    "no CRI call yet",
			text:    "# TYPE go_goroutines gauge\ngo_goroutines 42\n",
			wantOps: map[string]float64{},
			wantSum: map[string]float64{},
		},
		{
			name:    "not a histogram",
			text:    "# TYPE peapod_cri_request_duration_seconds counter\npeapod_cri_request_duration_seconds{method=\"Version\"} 2\n",
			wantErr: true,
		},
		{
			name:    "a series without method",
			text:    "# TYPE peapod_cri_request_duration_seconds histogram\npeapod_cri_request_duration_seconds_bucket{le=\"+Inf\"} 1\npeapod_cri_request_duration_seconds_sum 0.1\npeapod_cri_request_duration_seconds_count 1\n",
			wantErr: true,
		},
		{
			name:    "not the text format",
			text:    "peapod_cri_request_duration_seconds_count{method=\"Version\" 2\n",
			wantErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseRuntimeCRI(strings.NewReader(tc.text))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %t", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if !maps.Equal(s.ops, tc.wantOps) {
				t.Errorf("ops %v, want %v", s.ops, tc.wantOps)
			}
			if !maps.Equal(s.opCount, tc.wantOps) {
				t.Errorf("counts %v, want %v", s.opCount, tc.wantOps)
			}
			if !maps.Equal(s.opSum, tc.wantSum) {
				t.Errorf("sums %v, want %v", s.opSum, tc.wantSum)
			}
		})
	}
}

// The agent's CRI calls over a window: the delta of two of peapod's
// scrapes, as the kubelet's are of two of its own.
func TestRuntimeCRISince(t *testing.T) {
	parse := func(text string) snapshot {
		t.Helper()
		s, err := parseRuntimeCRI(strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := parse(peapodText(map[string]int{"Version": 2, "ListPodSandbox": 5}, map[string]float64{"ListPodSandbox": 0.01}))
	after := parse(peapodText(map[string]int{"Version": 2, "ListPodSandbox": 264, "RunPodSandbox": 10}, map[string]float64{"ListPodSandbox": 0.5, "RunPodSandbox": 2}))
	d, err := after.since(before)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]float64{"version": 0, "list_podsandbox": 259, "run_podsandbox": 10}; !maps.Equal(d.ops, want) {
		t.Errorf("ops %v, want %v", d.ops, want)
	}
	if m := d.opMean["run_podsandbox"]; math.Abs(m-0.2) > 1e-9 {
		t.Errorf("run_podsandbox mean %g, want 0.2", m)
	}
}

func TestOperationOf(t *testing.T) {
	for method, want := range map[string]string{
		"RunPodSandbox":             "run_podsandbox",
		"PodSandboxStatus":          "podsandbox_status",
		"ListPodSandboxStats":       "list_podsandbox_stats",
		"UpdateContainerResources":  "update_container", // not update_container_resources
		"UpdatePodSandboxResources": "update_podsandbox_resources",
		"ImageFsInfo":               "image_fs_info",
		"Exec":                      "exec",
		"Status":                    "status",
		"Unknown":                   "Unknown",
	} {
		if got := operationOf(method); got != want {
			t.Errorf("operationOf(%s) = %s, want %s", method, got, want)
		}
	}
}

func TestSubtractCalls(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ops     map[string]float64
		n       float64
		want    map[string]float64
		wantErr bool
	}{
		{"the bench's polls off", map[string]float64{"list_podsandbox": 259, "version": 1}, 5, map[string]float64{"list_podsandbox": 254, "version": 1}, false},
		{"none made", map[string]float64{"version": 1}, 0, map[string]float64{"version": 1}, false},
		{"more than counted: an error", map[string]float64{"list_podsandbox": 3}, 5, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := subtractCalls(tc.ops, listPodSandboxOp, tc.n)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %t", err, tc.wantErr)
			}
			if err == nil && !maps.Equal(tc.ops, tc.want) {
				t.Errorf("ops %v, want %v", tc.ops, tc.want)
			}
		})
	}
}

func TestHTTPAddressFromLog(t *testing.T) {
	line := func(addr string) string {
		return `I1206 08:35:18.123456    4771 http.go:64] "HTTP endpoint listening" address="` + addr + `"` + "\n"
	}
	for _, tc := range []struct {
		name, log, want string
		wantErr         bool
	}{
		{"one", "I1206 start\n" + line("127.0.0.1:41235") + `I1206 "peapod serving" http="127.0.0.1:41235"` + "\n", "127.0.0.1:41235", false},
		{"restarted: the last", line("127.0.0.1:1000") + line("127.0.0.1:2000"), "127.0.0.1:2000", false},
		{"not yet", "I1206 start\n", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := httpAddressFromLog([]byte(tc.log))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %t", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSelected(t *testing.T) {
	keys := func(ss []setup) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.key)
		}
		return out
	}
	for _, tc := range []struct {
		only string
		want []string
	}{
		{"", []string{"peapod", "peapod-agent", "containerd", "containerd-debian"}},
		{"peapod", []string{"peapod"}},
		{"peapod-agent", []string{"peapod-agent"}},
		{"containerd,peapod-agent", []string{"peapod-agent", "containerd"}}, // in the table's order
	} {
		o := options{only: tc.only}
		if got := keys(o.selected()); !slices.Equal(got, tc.want) {
			t.Errorf("-only %q: %q, want %q", tc.only, got, tc.want)
		}
	}
}
