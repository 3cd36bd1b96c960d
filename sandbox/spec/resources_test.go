package spec

import (
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func u64(v uint64) *uint64 { return &v }

func TestResources(t *testing.T) {
	tests := []struct {
		name string
		in   *runtimeapi.LinuxContainerResources
		want *specs.LinuxResources
	}{
		{name: "nil", in: nil, want: nil},
		{name: "empty", in: &runtimeapi.LinuxContainerResources{}, want: &specs.LinuxResources{}},
		{name: "oom only is not a resource", in: &runtimeapi.LinuxContainerResources{OomScoreAdj: 1000}, want: &specs.LinuxResources{}},
		{
			name: "cpu",
			in:   &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, CpusetCpus: "0-1", CpusetMems: "0"},
			want: &specs.LinuxResources{CPU: &specs.LinuxCPU{Period: u64(100000), Quota: i64(50000), Shares: u64(512), Cpus: "0-1", Mems: "0"}},
		},
		{
			name: "memory limit sets swap equal",
			in:   &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20},
			want: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(64 << 20)}},
		},
		{
			name: "explicit swap wins",
			in:   &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, MemorySwapLimitInBytes: 128 << 20},
			want: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(128 << 20)}},
		},
		{
			name: "unlimited swap",
			in:   &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, MemorySwapLimitInBytes: -1},
			want: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(-1)}},
		},
		{
			name: "hugepages and unified",
			in: &runtimeapi.LinuxContainerResources{
				HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}, {PageSize: "1GB", Limit: 0}},
				Unified:        map[string]string{"memory.high": "1000000"},
			},
			want: &specs.LinuxResources{
				HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}, {Pagesize: "1GB", Limit: 0}},
				Unified:        map[string]string{"memory.high": "1000000"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Resources(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
