package sandbox

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestMergeResources(t *testing.T) {
	old := &runtimeapi.LinuxContainerResources{CpuShares: 102, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20, OomScoreAdj: 900, CpusetCpus: "0", Unified: map[string]string{"a": "1"}}
	for _, tc := range []struct {
		name string
		old  *runtimeapi.LinuxContainerResources
		upd  *runtimeapi.LinuxContainerResources
		want *runtimeapi.LinuxContainerResources
	}{
		{"resize cpu and memory", old,
			&runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 100000, MemoryLimitInBytes: 128 << 20},
			&runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 100000, CpuPeriod: 100000, MemoryLimitInBytes: 128 << 20, OomScoreAdj: 900, CpusetCpus: "0", Unified: map[string]string{"a": "1"}}},
		{"unified keys added, others kept", old,
			&runtimeapi.LinuxContainerResources{Unified: map[string]string{"b": "2"}},
			&runtimeapi.LinuxContainerResources{CpuShares: 102, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20, OomScoreAdj: 900, CpusetCpus: "0", Unified: map[string]string{"a": "1", "b": "2"}}},
		{"no resources at create", nil,
			&runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 30},
			&runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before *runtimeapi.LinuxContainerResources
			if tc.old != nil {
				before = proto.Clone(tc.old).(*runtimeapi.LinuxContainerResources)
			}
			got := mergeResources(tc.old, tc.upd)
			if !proto.Equal(got, tc.want) {
				t.Errorf("got %v\nwant %v", got, tc.want)
			}
			if tc.old != nil && !proto.Equal(tc.old, before) {
				t.Error("the old resources were modified")
			}
		})
	}
}
