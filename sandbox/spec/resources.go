package spec

import (
	"maps"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Resources maps CRI LinuxContainerResources to OCI LinuxResources the way
// containerd's WithResources does. Zero values mean "not set". When a memory
// limit is given without memory_swap_limit_in_bytes, swap is set equal to the
// limit (no swap), which is what the kubelet expects; an explicit
// memory_swap_limit_in_bytes wins. oom_score_adj is not a cgroup resource:
// Container puts it on the process. Returns nil for nil input.
//
// Device rules are not set here; Container adds them.
func Resources(r *runtimeapi.LinuxContainerResources) *specs.LinuxResources {
	if r == nil {
		return nil
	}
	out := &specs.LinuxResources{}
	cpu := &specs.LinuxCPU{}
	if p := r.GetCpuPeriod(); p != 0 {
		v := uint64(p)
		cpu.Period = &v
	}
	if q := r.GetCpuQuota(); q != 0 {
		cpu.Quota = &q
	}
	if s := r.GetCpuShares(); s != 0 {
		v := uint64(s)
		cpu.Shares = &v
	}
	cpu.Cpus = r.GetCpusetCpus()
	cpu.Mems = r.GetCpusetMems()
	if *cpu != (specs.LinuxCPU{}) {
		out.CPU = cpu
	}
	mem := &specs.LinuxMemory{}
	if l := r.GetMemoryLimitInBytes(); l != 0 {
		mem.Limit = &l
		swap := l
		mem.Swap = &swap
	}
	if s := r.GetMemorySwapLimitInBytes(); s != 0 {
		mem.Swap = &s
	}
	if mem.Limit != nil || mem.Swap != nil {
		out.Memory = mem
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{
			Pagesize: h.GetPageSize(),
			Limit:    h.GetLimit(),
		})
	}
	if u := r.GetUnified(); len(u) > 0 {
		out.Unified = maps.Clone(u)
	}
	return out
}

// DropHugepageLimits returns nil for a host whose runtime cannot set
// hugetlb limits; a non-zero limit among them becomes a warning naming the
// field (w may be nil).
func DropHugepageLimits(limits []specs.LinuxHugepageLimit, field string, w *Warnings) []specs.LinuxHugepageLimit {
	for _, h := range limits {
		if h.Limit != 0 && w != nil {
			w.add("%s: %s limit %d ignored: no hugetlb cgroup controller the runtime can use on this host", field, h.Pagesize, h.Limit)
		}
	}
	return nil
}
