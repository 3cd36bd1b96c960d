package main

import (
	"sort"
	"testing"
)

func TestParseAgentMetrics(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		want    []string
		wantErr bool
	}{
		{
			name: "agent series kept, process and Go series left to serve",
			body: `# HELP peapod_container_restarts_total Container restarts made by the agent.
# TYPE peapod_container_restarts_total counter
peapod_container_restarts_total{container="c",namespace="default",pod="p"} 2
# TYPE go_goroutines gauge
go_goroutines 12
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1e+07
# TYPE promhttp_metric_handler_requests_total counter
promhttp_metric_handler_requests_total{code="200"} 1
`,
			want: []string{"peapod_container_restarts_total"},
		},
		{name: "empty", body: "", want: nil},
		{name: "garbage", body: "this is { not metrics\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fams, err := parseAgentMetrics([]byte(tc.body))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			var got []string
			for _, f := range fams {
				got = append(got, f.GetName())
			}
			sort.Strings(got)
			if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
				t.Errorf("families = %v, want %v", got, tc.want)
			}
		})
	}
}
