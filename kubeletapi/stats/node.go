package stats

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"peapod/internal/procfs"
)

// The node's figures, read from the kernel as cAdvisor reads them for the
// root cgroup "/", which is where the kubelet takes node stats from.

const nodeCPUKey = "node"

// bootTime is btime of /proc/stat: the node's startTime, as the kubelet's
// util.GetBootTime reads it.
func (p *Provider) bootTime() (time.Time, error) {
	b, err := os.ReadFile(filepath.Join(p.host.proc, "stat"))
	if err != nil {
		return time.Time{}, err
	}
	st, err := parseProcStat(b)
	return st.BootTime, err
}

// nodeCPU samples /proc/stat and updates the node's entry of the CPU cache.
func (p *Provider) nodeCPU() (*statsapi.CPUStats, error) {
	now := p.now()
	b, err := os.ReadFile(filepath.Join(p.host.proc, "stat"))
	if err != nil {
		return nil, err
	}
	st, err := parseProcStat(b)
	if err != nil {
		return nil, err
	}
	usage := st.CPUNanos
	return &statsapi.CPUStats{
		Time:                 metav1.NewTime(now),
		UsageCoreNanoSeconds: &usage,
		UsageNanoCores:       p.cpu.update(nodeCPUKey, now.UnixNano(), usage),
	}, nil
}

// rootMemory is the root cgroup's memory, cAdvisor's way.
type rootMemory struct {
	Usage, InactiveFile, RSS uint64
	PageFaults, MajorFaults  *uint64
}

// nodeMemory reads the node's memory and swap. Working set is cAdvisor's
// for the root cgroup: usage − inactive file pages, with usage and the
// inactive file pages of the root memory cgroup on cgroup v1
// (memory.usage_in_bytes, total_inactive_file of memory.stat); on cgroup v2
// the root has no memory.current, so usage is anon + file of the root
// memory.stat (runc's rootStatsFromMeminfo does the same); without either,
// /proc/meminfo's MemTotal − MemFree and Inactive(file). availableBytes is
// MemTotal − working set: cAdvisor's root limit is the machine's memory.
func (p *Provider) nodeMemory() (*statsapi.MemoryStats, *statsapi.SwapStats, error) {
	now := metav1.NewTime(p.now())
	b, err := os.ReadFile(filepath.Join(p.host.proc, "meminfo"))
	if err != nil {
		return nil, nil, err
	}
	mi := procfs.ParseMeminfo(b)
	rm, err := p.rootMemory(mi)
	if err != nil {
		return nil, nil, err
	}
	ws := rm.Usage - min(rm.InactiveFile, rm.Usage)
	usage, rss := rm.Usage, rm.RSS
	mem := &statsapi.MemoryStats{
		Time:            now,
		UsageBytes:      &usage,
		WorkingSetBytes: &ws,
		RSSBytes:        &rss,
		PageFaults:      rm.PageFaults,
		MajorPageFaults: rm.MajorFaults,
	}
	if total, ok := mi["MemTotal"]; ok {
		avail := total - min(ws, total)
		mem.AvailableBytes = &avail
	}
	var swap *statsapi.SwapStats
	if total, ok := mi["SwapTotal"]; ok {
		free := mi["SwapFree"]
		used := total - min(free, total)
		swap = &statsapi.SwapStats{Time: now, SwapUsageBytes: &used, SwapAvailableBytes: &free}
	}
	return mem, swap, nil
}

func (p *Provider) rootMemory(mi map[string]uint64) (rootMemory, error) {
	v1 := filepath.Join(p.host.cgroup, "memory")
	if _, err := os.Stat(filepath.Join(v1, "memory.usage_in_bytes")); err == nil {
		// The total_ (hierarchical) counters: the root's own ones leave out
		// every child cgroup on v1.
		m, err := readMemoryV1(v1)
		if err != nil {
			return rootMemory{}, fmt.Errorf("%s: %w", v1, err)
		}
		return rootMemory{Usage: m.Usage, InactiveFile: m.InactiveFile, RSS: m.RSS, PageFaults: m.PageFaults, MajorFaults: m.MajorFaults}, nil
	}
	if sb, err := os.ReadFile(filepath.Join(p.host.cgroup, "memory.stat")); err == nil {
		st := parseFlatKeyed(sb)
		return rootMemory{Usage: st["anon"] + st["file"], InactiveFile: st["inactive_file"], RSS: st["anon"],
			PageFaults: lookup(st, "pgfault"), MajorFaults: lookup(st, "pgmajfault")}, nil
	}
	total, ok1 := mi["MemTotal"]
	free, ok2 := mi["MemFree"]
	if !ok1 || !ok2 {
		return rootMemory{}, errors.New("no memory cgroup and no MemTotal/MemFree in /proc/meminfo")
	}
	return rootMemory{Usage: total - min(free, total), InactiveFile: mi["Inactive(file)"], RSS: mi["AnonPages"]}, nil
}

func lookup(m map[string]uint64, k string) *uint64 {
	if v, ok := m[k]; ok {
		return &v
	}
	return nil
}

// ignoredInterface is cAdvisor's isIgnoredDevice: loopback, and the host
// ends of container veths (and docker's / nerdctl's bridges), whose traffic
// the pods' own figures already count.
func ignoredInterface(name string) bool {
	name = strings.ToLower(name)
	for _, p := range []string{"lo", "veth", "docker", "nerdctl"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// defaultInterface is the kubelet's defaultNetworkInterfaceName: the
// summary's inline interface figures are this interface's, when present.
const defaultInterface = "eth0"

// nodeNetwork reads /proc/net/dev of the agent's network namespace.
func (p *Provider) nodeNetwork() (*statsapi.NetworkStats, error) {
	now := metav1.NewTime(p.now())
	b, err := os.ReadFile(filepath.Join(p.host.proc, "net", "dev"))
	if err != nil {
		return nil, err
	}
	devs, err := parseNetDev(b)
	if err != nil {
		return nil, err
	}
	ns := &statsapi.NetworkStats{Time: now}
	for _, d := range devs {
		if ignoredInterface(d.Name) {
			continue
		}
		is := statsapi.InterfaceStats{Name: d.Name, RxBytes: &d.RxBytes, RxErrors: &d.RxErrors, TxBytes: &d.TxBytes, TxErrors: &d.TxErrors}
		if d.Name == defaultInterface {
			ns.InterfaceStats = is
		}
		ns.Interfaces = append(ns.Interfaces, is)
	}
	return ns, nil
}

// rlimit is the kubelet's pidlimit.Stats: the lower of kernel.pid_max and
// kernel.threads-max, and the tasks alive (/proc/loadavg).
func (p *Provider) rlimit() *statsapi.RlimitStats {
	r := &statsapi.RlimitStats{Time: metav1.NewTime(p.now())}
	maxPID := int64(-1)
	for _, f := range []string{"pid_max", "threads-max"} {
		b, err := os.ReadFile(filepath.Join(p.host.proc, "sys", "kernel", f))
		if err != nil {
			continue
		}
		if v, err := parseUint(b); err == nil && (maxPID < 0 || int64(v) < maxPID) {
			maxPID = int64(v)
		}
	}
	if maxPID >= 0 {
		r.MaxPID = &maxPID
	}
	if b, err := os.ReadFile(filepath.Join(p.host.proc, "loadavg")); err == nil {
		if n, err := parseLoadavgTasks(b); err == nil {
			r.NumOfRunningProcesses = &n
		}
	}
	return r
}
