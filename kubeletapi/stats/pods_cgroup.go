package stats

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"peapod/internal/procfs"
)

// The "pods" system container is the cgroup all pods run under
// (Options.PodsCgroup), with the CPU and memory figures cAdvisor gives the
// kubelet for it. The eviction manager's allocatableMemory.available
// signal is its availableBytes: the cgroup's limit (the pods' allocatable)
// − its working set.

// podsCPUKey is the CPU cache's entry for the pods cgroup; container and
// sandbox ids are hex, so it cannot clash.
const podsCPUKey = "system:pods"

// systemContainers is the summary's node.systemContainers: the pods
// cgroup when configured. A cgroup that cannot be read is left out, as
// the kubelet leaves out a system container it has no stats for; the
// rest of the summary stands.
func (p *Provider) systemContainers() []statsapi.ContainerStats {
	if p.o.PodsCgroup == "" {
		return nil
	}
	c, err := p.podsContainer()
	if err != nil {
		klog.V(2).InfoS("No stats for the pods cgroup", "cgroup", p.o.PodsCgroup, "err", err)
		return nil
	}
	return []statsapi.ContainerStats{*c}
}

// podsContainer reads the pods cgroup, on cgroup v1 (memory and cpuacct
// hierarchies) or v2 (one hierarchy).
func (p *Provider) podsContainer() (*statsapi.ContainerStats, error) {
	now := p.now()
	rel := strings.TrimPrefix(filepath.Clean("/"+p.o.PodsCgroup), "/")
	v1Mem := filepath.Join(p.host.cgroup, "memory", rel)
	var (
		mem   cgroupMemory
		usage uint64
		err   error
	)
	if _, statErr := os.Stat(filepath.Join(v1Mem, "memory.usage_in_bytes")); statErr == nil {
		if mem, err = readMemoryV1(v1Mem); err != nil {
			return nil, err
		}
		if usage, err = p.cpuUsageV1(rel); err != nil {
			return nil, err
		}
	} else {
		dir := filepath.Join(p.host.cgroup, rel)
		if mem, err = readMemoryV2(dir); err != nil {
			return nil, err
		}
		if usage, err = cpuUsageV2(dir); err != nil {
			return nil, err
		}
	}

	ts := metav1.NewTime(now)
	ws := mem.Usage - min(mem.InactiveFile, mem.Usage)
	m := &statsapi.MemoryStats{
		Time:            ts,
		UsageBytes:      &mem.Usage,
		WorkingSetBytes: &ws,
		RSSBytes:        &mem.RSS,
		PageFaults:      mem.PageFaults,
		MajorPageFaults: mem.MajorFaults,
	}
	// With no limit of its own, the pods' limit is the machine's memory,
	// as cAdvisor reports it.
	limit, limited := mem.Limit, mem.Limited
	if b, err := os.ReadFile(filepath.Join(p.host.proc, "meminfo")); err == nil {
		if total, ok := procfs.ParseMeminfo(b)["MemTotal"]; ok && (!limited || limit > total) {
			limit, limited = total, true
		}
	}
	if limited {
		avail := limit - min(ws, limit)
		m.AvailableBytes = &avail
	}
	return &statsapi.ContainerStats{
		Name: statsapi.SystemContainerPods,
		CPU: &statsapi.CPUStats{
			Time:                 ts,
			UsageCoreNanoSeconds: &usage,
			UsageNanoCores:       p.cpu.update(podsCPUKey, now.UnixNano(), usage),
		},
		Memory: m,
	}, nil
}

// cgroupMemory is one memory cgroup's figures.
type cgroupMemory struct {
	Usage, InactiveFile, RSS uint64
	PageFaults, MajorFaults  *uint64
	// Limit is the cgroup's memory limit when Limited.
	Limit   uint64
	Limited bool
}

// v1Unlimited is above any real memory size: cgroup v1 writes "no limit"
// as the largest page-aligned int64 (9223372036854771712), and any
// limit beyond the machine's memory is none in effect.
const v1Unlimited = 1 << 62

// readMemoryV1 reads a cgroup v1 memory cgroup, its hierarchical (total_)
// counters, which count the pods' own cgroups below it.
func readMemoryV1(dir string) (cgroupMemory, error) {
	usage, err := readUintFile(filepath.Join(dir, "memory.usage_in_bytes"))
	if err != nil {
		return cgroupMemory{}, err
	}
	sb, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return cgroupMemory{}, err
	}
	st := parseFlatKeyed(sb)
	m := cgroupMemory{Usage: usage, InactiveFile: st["total_inactive_file"], RSS: st["total_rss"],
		PageFaults: lookup(st, "total_pgfault"), MajorFaults: lookup(st, "total_pgmajfault")}
	if limit, err := readUintFile(filepath.Join(dir, "memory.limit_in_bytes")); err == nil && limit < v1Unlimited {
		m.Limit, m.Limited = limit, true
	}
	return m, nil
}

// readMemoryV2 reads a cgroup v2 cgroup's memory.
func readMemoryV2(dir string) (cgroupMemory, error) {
	usage, err := readUintFile(filepath.Join(dir, "memory.current"))
	if err != nil {
		return cgroupMemory{}, err
	}
	sb, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return cgroupMemory{}, err
	}
	st := parseFlatKeyed(sb)
	m := cgroupMemory{Usage: usage, InactiveFile: st["inactive_file"], RSS: st["anon"],
		PageFaults: lookup(st, "pgfault"), MajorFaults: lookup(st, "pgmajfault")}
	// memory.max is "max" without a limit.
	if limit, err := readUintFile(filepath.Join(dir, "memory.max")); err == nil {
		m.Limit, m.Limited = limit, true
	}
	return m, nil
}

// cpuUsageV1 is cpuacct.usage of the cgroup (nanoseconds), in the cpuacct
// hierarchy, mounted alone or joined with cpu.
func (p *Provider) cpuUsageV1(rel string) (uint64, error) {
	var errs []error
	for _, h := range []string{"cpuacct", "cpu,cpuacct", "cpuacct,cpu"} {
		v, err := readUintFile(filepath.Join(p.host.cgroup, h, rel, "cpuacct.usage"))
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
		errs = append(errs, err)
	}
	return 0, errors.Join(errs...)
}

// cpuUsageV2 is usage_usec of the cgroup's cpu.stat, in nanoseconds.
func cpuUsageV2(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	usec, ok := parseFlatKeyed(b)["usage_usec"]
	if !ok {
		return 0, fmt.Errorf("%s: no usage_usec", filepath.Join(dir, "cpu.stat"))
	}
	return usec * 1000, nil
}

func readUintFile(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := parseUint(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}
