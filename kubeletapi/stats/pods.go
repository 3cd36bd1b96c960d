package stats

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Pods and their containers, from the CRI, field by field as the kubelet's
// CRI stats provider derives them (cri_stats_provider.go and
// cri_stats_provider_linux.go, the PodAndContainerStatsFromCRI path): the
// figures of ListPodSandboxStats, for the sandboxes of ListPodSandbox and
// the running containers of ListContainers. A runtime that answers
// ListPodSandboxStats with Unimplemented gets the kubelet's other path:
// ListContainerStats, with the pod's CPU and memory summed over its
// containers and no pod network.

// podScope says how much of each pod the caller wants.
type podScope int

const (
	// cpuAndMemory: containers' and pods' CPU, memory and swap (the
	// kubelet's ListPodCPUAndMemoryStats, behind only_cpu_and_memory and
	// /metrics/resource).
	cpuAndMemory podScope = iota
	// fullPod adds network, processes, IO, rootfs, logs and ephemeral
	// storage (the kubelet's ListPodStats).
	fullPod
)

// podMaps lists the sandboxes and the running containers by id, as the
// kubelet's getPodAndContainerMaps: a pod name that has a ready sandbox
// keeps only its ready sandboxes, else its newest one.
func (p *Provider) podMaps(ctx context.Context) (map[string]*runtimeapi.Container, map[string]*runtimeapi.PodSandbox, error) {
	containers, err := p.o.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{})
	if err != nil {
		return nil, nil, fmt.Errorf("list containers: %w", err)
	}
	sandboxes, err := p.o.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{})
	if err != nil {
		return nil, nil, fmt.Errorf("list pod sandboxes: %w", err)
	}
	sbMap := map[string]*runtimeapi.PodSandbox{}
	for _, s := range removeTerminatedPods(sandboxes) {
		sbMap[s.Id] = s
	}
	cMap := map[string]*runtimeapi.Container{}
	for _, c := range containers {
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			cMap[c.Id] = c
		}
	}
	return cMap, sbMap, nil
}

// removeTerminatedPods is the kubelet's: sandboxes of one pod name (a
// sandbox recreated, or a pod recreated under the same name) reduce to the
// ready ones, or to the newest when none is ready.
func removeTerminatedPods(pods []*runtimeapi.PodSandbox) []*runtimeapi.PodSandbox {
	type ref struct{ ns, name string }
	byRef := map[ref][]*runtimeapi.PodSandbox{}
	var order []ref
	pods = slices.Clone(pods)
	slices.SortStableFunc(pods, func(a, b *runtimeapi.PodSandbox) int { return cmp.Compare(a.CreatedAt, b.CreatedAt) })
	for _, s := range pods {
		r := ref{s.GetMetadata().GetNamespace(), s.GetMetadata().GetName()}
		if _, ok := byRef[r]; !ok {
			order = append(order, r)
		}
		byRef[r] = append(byRef[r], s)
	}
	var out []*runtimeapi.PodSandbox
	for _, r := range order {
		refs := byRef[r]
		ready := false
		for _, s := range refs {
			if s.State == runtimeapi.PodSandboxState_SANDBOX_READY {
				out = append(out, s)
				ready = true
			}
		}
		if !ready {
			out = append(out, refs[len(refs)-1])
		}
	}
	return out
}

// podCtx is what one listing of pod stats shares.
type podCtx struct {
	scope  podScope
	rootFs fsInfo // the node filesystem, for logs (fullPod only)
	fs     fsCache
}

// listPodStats returns the stats of every pod, sorted by namespace, name
// and uid.
func (p *Provider) listPodStats(ctx context.Context, pc podCtx) ([]statsapi.PodStats, error) {
	cMap, sbMap, err := p.podMaps(ctx)
	if err != nil {
		return nil, err
	}
	out, err := p.podStatsFromSandboxStats(ctx, pc, cMap, sbMap)
	if status.Code(err) == codes.Unimplemented {
		klog.V(4).InfoS("The runtime has no ListPodSandboxStats; summing container stats", "err", err)
		out, err = p.podStatsFromContainerStats(ctx, pc, cMap, sbMap)
	}
	if err != nil {
		return nil, err
	}
	p.cpu.prune(p.now())
	slices.SortFunc(out, func(a, b statsapi.PodStats) int {
		return cmp.Or(cmp.Compare(a.PodRef.Namespace, b.PodRef.Namespace), cmp.Compare(a.PodRef.Name, b.PodRef.Name),
			cmp.Compare(a.PodRef.UID, b.PodRef.UID))
	})
	return out, nil
}

func (p *Provider) podStatsFromSandboxStats(ctx context.Context, pc podCtx, cMap map[string]*runtimeapi.Container, sbMap map[string]*runtimeapi.PodSandbox) ([]statsapi.PodStats, error) {
	all, err := p.o.Runtime.ListPodSandboxStats(ctx, &runtimeapi.PodSandboxStatsFilter{})
	if err != nil {
		return nil, err
	}
	out := make([]statsapi.PodStats, 0, len(all))
	for _, st := range all {
		if st.GetAttributes() == nil {
			continue
		}
		sb, ok := sbMap[st.Attributes.Id]
		if !ok {
			continue
		}
		ps := buildPodStats(sb)
		linux := st.GetLinux()
		for _, cst := range linux.GetContainers() {
			c, ok := cMap[cst.GetAttributes().GetId()]
			if !ok {
				continue
			}
			ps.Containers = append(ps.Containers, p.containerStats(cst, c, sb, pc))
		}
		if cpu := linux.GetCpu(); cpu != nil {
			ps.CPU = p.cpuStats(cpu, "pod/"+sb.Id)
		}
		ps.Memory = memoryStats(linux.GetMemory())
		ps.Swap = podSwap(ps.Containers)
		if pc.scope == fullPod {
			ps.Network = networkStats(linux.GetNetwork())
			ps.IO = ioStats(linux.GetIo())
			if pr := linux.GetProcess(); pr != nil {
				ps.ProcessStats = &statsapi.ProcessStats{ProcessCount: u64(pr.ProcessCount)}
			}
			ps.EphemeralStorage = p.ephemeralStorage(ps, pc)
		}
		out = append(out, *ps)
	}
	return out, nil
}

// podStatsFromContainerStats is the kubelet's path for a runtime without
// pod sandbox stats: the pod's CPU and memory are the sums of its
// containers' (addPodCPUMemoryStats without cAdvisor).
func (p *Provider) podStatsFromContainerStats(ctx context.Context, pc podCtx, cMap map[string]*runtimeapi.Container, sbMap map[string]*runtimeapi.PodSandbox) ([]statsapi.PodStats, error) {
	all, err := p.o.Runtime.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{})
	if err != nil {
		return nil, fmt.Errorf("list container stats: %w", err)
	}
	byPod := map[string]*statsapi.PodStats{}
	var order []string
	for _, cst := range all {
		c, ok := cMap[cst.GetAttributes().GetId()]
		if !ok {
			continue
		}
		sb, ok := sbMap[c.PodSandboxId]
		if !ok {
			continue
		}
		ps, ok := byPod[sb.Id]
		if !ok {
			ps = buildPodStats(sb)
			byPod[sb.Id] = ps
			order = append(order, sb.Id)
		}
		ps.Containers = append(ps.Containers, p.containerStats(cst, c, sb, pc))
	}
	out := make([]statsapi.PodStats, 0, len(order))
	for _, id := range order {
		ps := byPod[id]
		podCPUAndMemory(ps)
		ps.Swap = podSwap(ps.Containers)
		if pc.scope == fullPod {
			ps.EphemeralStorage = p.ephemeralStorage(ps, pc)
		}
		out = append(out, *ps)
	}
	return out, nil
}

// buildPodStats is the kubelet's: the pod's startTime is its sandbox's
// creation.
func buildPodStats(sb *runtimeapi.PodSandbox) *statsapi.PodStats {
	return &statsapi.PodStats{
		PodRef: statsapi.PodReference{
			Name:      sb.GetMetadata().GetName(),
			Namespace: sb.GetMetadata().GetNamespace(),
			UID:       sb.GetMetadata().GetUid(),
		},
		StartTime: metav1.NewTime(time.Unix(0, sb.CreatedAt)),
	}
}

// containerStats maps one container's CRI stats. startTime is the
// container's creation, as in the kubelet's summary.
func (p *Provider) containerStats(st *runtimeapi.ContainerStats, c *runtimeapi.Container, sb *runtimeapi.PodSandbox, pc podCtx) statsapi.ContainerStats {
	name := st.GetAttributes().GetMetadata().GetName()
	if name == "" {
		name = c.GetMetadata().GetName()
	}
	cs := statsapi.ContainerStats{Name: name, StartTime: metav1.NewTime(time.Unix(0, c.CreatedAt))}
	if cpu := st.GetCpu(); cpu != nil {
		cs.CPU = p.cpuStats(cpu, "container/"+c.Id)
	}
	cs.Memory = memoryStats(st.GetMemory())
	if sw := st.GetSwap(); sw != nil {
		cs.Swap = &statsapi.SwapStats{
			Time:               metav1.NewTime(time.Unix(0, sw.Timestamp)),
			SwapUsageBytes:     u64(sw.SwapUsageBytes),
			SwapAvailableBytes: u64(sw.SwapAvailableBytes),
		}
	}
	if pc.scope != fullPod {
		return cs
	}
	cs.IO = ioStats(st.GetIo())
	if wl := st.GetWritableLayer(); wl != nil {
		cs.Rootfs = &statsapi.FsStats{
			Time:       metav1.NewTime(time.Unix(0, wl.Timestamp)),
			UsedBytes:  u64(wl.UsedBytes),
			InodesUsed: u64(wl.InodesUsed),
		}
		if mp := wl.GetFsId().GetMountpoint(); mp != "" {
			if fi := pc.fs.get(mp); fi != nil {
				withCapacity(cs.Rootfs, *fi)
			}
		}
	}
	if p.o.PodLogsDir != "" {
		m := sb.GetMetadata()
		dir := podLogsDir(p.o.PodLogsDir, m.GetNamespace(), m.GetName(), m.GetUid())
		logs, err := logUsage(dir+"/"+c.GetMetadata().GetName(), pc.rootFs)
		if err != nil {
			klog.V(4).InfoS("No container log stats", "pod", klog.KRef(m.GetNamespace(), m.GetName()), "container", name, "err", err)
		}
		cs.Logs = logs
	}
	return cs
}

// cpuStats maps CRI CPU usage; usageNanoCores is the runtime's when it
// gives one, else the rate since the last sample of key.
func (p *Provider) cpuStats(cpu *runtimeapi.CpuUsage, key string) *statsapi.CPUStats {
	out := &statsapi.CPUStats{
		Time:                 metav1.NewTime(time.Unix(0, cpu.Timestamp)),
		UsageCoreNanoSeconds: u64(cpu.UsageCoreNanoSeconds),
		UsageNanoCores:       u64(cpu.UsageNanoCores),
		PSI:                  psiStats(cpu.Psi),
	}
	if out.UsageNanoCores == nil && out.UsageCoreNanoSeconds != nil {
		out.UsageNanoCores = p.cpu.update(key, cpu.Timestamp, *out.UsageCoreNanoSeconds)
	}
	return out
}

func memoryStats(m *runtimeapi.MemoryUsage) *statsapi.MemoryStats {
	if m == nil {
		return nil
	}
	return &statsapi.MemoryStats{
		Time:            metav1.NewTime(time.Unix(0, m.Timestamp)),
		AvailableBytes:  u64(m.AvailableBytes),
		UsageBytes:      u64(m.UsageBytes),
		WorkingSetBytes: u64(m.WorkingSetBytes),
		RSSBytes:        u64(m.RssBytes),
		PageFaults:      u64(m.PageFaults),
		MajorPageFaults: u64(m.MajorPageFaults),
		PSI:             psiStats(m.Psi),
	}
}

func ioStats(io *runtimeapi.IoUsage) *statsapi.IOStats {
	if io == nil {
		return nil
	}
	return &statsapi.IOStats{Time: metav1.NewTime(time.Unix(0, io.Timestamp)), PSI: psiStats(io.Psi)}
}

func psiStats(p *runtimeapi.PsiStats) *statsapi.PSIStats {
	if p == nil {
		return nil
	}
	data := func(d *runtimeapi.PsiData) statsapi.PSIData {
		if d == nil {
			return statsapi.PSIData{}
		}
		return statsapi.PSIData{Total: d.Total, Avg10: d.Avg10, Avg60: d.Avg60, Avg300: d.Avg300}
	}
	return &statsapi.PSIStats{Full: data(p.Full), Some: data(p.Some)}
}

// networkStats is the kubelet's addCRIPodNetworkStats.
func networkStats(n *runtimeapi.NetworkUsage) *statsapi.NetworkStats {
	if n == nil {
		return nil
	}
	iface := func(i *runtimeapi.NetworkInterfaceUsage) statsapi.InterfaceStats {
		if i == nil {
			return statsapi.InterfaceStats{}
		}
		return statsapi.InterfaceStats{Name: i.Name, RxBytes: u64(i.RxBytes), RxErrors: u64(i.RxErrors), TxBytes: u64(i.TxBytes), TxErrors: u64(i.TxErrors)}
	}
	out := &statsapi.NetworkStats{
		Time:           metav1.NewTime(time.Unix(0, n.Timestamp)),
		InterfaceStats: iface(n.DefaultInterface),
		Interfaces:     make([]statsapi.InterfaceStats, 0, len(n.Interfaces)),
	}
	for _, i := range n.Interfaces {
		out.Interfaces = append(out.Interfaces, iface(i))
	}
	return out
}

// podSwap is the kubelet's aggregatePodSwapStats: the CRI has no pod-level
// swap, so the pod's is the sum of its containers'.
func podSwap(containers []statsapi.ContainerStats) *statsapi.SwapStats {
	var out *statsapi.SwapStats
	var avail, used uint64
	for _, c := range containers {
		if c.Swap == nil {
			continue
		}
		if out == nil {
			out = &statsapi.SwapStats{}
		}
		out.Time = c.Swap.Time
		avail += deref(c.Swap.SwapAvailableBytes)
		used += deref(c.Swap.SwapUsageBytes)
	}
	if out != nil {
		out.SwapAvailableBytes, out.SwapUsageBytes = &avail, &used
	}
	return out
}

// podCPUAndMemory sets the pod's CPU and memory to the sums of its
// containers', the kubelet's addPodCPUMemoryStats without a pod cgroup from
// cAdvisor. Where the kubelet counts a missing figure as zero, a pod figure
// here is nil when one of its containers lacks it: a partial sum is not the
// pod's.
func podCPUAndMemory(ps *statsapi.PodStats) {
	cs := ps.Containers
	if len(cs) == 0 {
		return
	}
	allCPU, allMem := true, true
	var cpuTime, memTime metav1.Time
	for _, c := range cs {
		if c.CPU == nil {
			allCPU = false
		} else {
			cpuTime = c.CPU.Time
		}
		if c.Memory == nil {
			allMem = false
		} else {
			memTime = c.Memory.Time
		}
	}
	if allCPU {
		ps.CPU = &statsapi.CPUStats{
			Time:                 cpuTime,
			UsageCoreNanoSeconds: sumOf(cs, func(c *statsapi.ContainerStats) *uint64 { return c.CPU.UsageCoreNanoSeconds }),
			UsageNanoCores:       sumOf(cs, func(c *statsapi.ContainerStats) *uint64 { return c.CPU.UsageNanoCores }),
		}
	}
	if allMem {
		ps.Memory = &statsapi.MemoryStats{
			Time:            memTime,
			AvailableBytes:  sumOf(cs, func(c *statsapi.ContainerStats) *uint64 { return c.Memory.AvailableBytes }),
			UsageBytes:      sumOf(cs, func(c *statsapi.ContainerStats) *uint64 { return c.Memory.UsageBytes }),
			WorkingSetBytes: sumOf(cs, func(c *statsapi.ContainerStats) *uint64 { return c.Memory.WorkingSetBytes }),
			RSSBytes:        sumOf(cs, func(c *statsapi.ContainerStats) *uint64 { return c.Memory.RSSBytes }),
			PageFaults:      sumOf(cs, func(c *statsapi.ContainerStats) *uint64 { return c.Memory.PageFaults }),
			MajorPageFaults: sumOf(cs, func(c *statsapi.ContainerStats) *uint64 { return c.Memory.MajorPageFaults }),
		}
	}
}

// sumOf sums one figure over the containers; nil when one lacks it.
func sumOf(cs []statsapi.ContainerStats, field func(*statsapi.ContainerStats) *uint64) *uint64 {
	var total uint64
	for i := range cs {
		v := field(&cs[i])
		if v == nil {
			return nil
		}
		total += *v
	}
	return &total
}

// ephemeralStorage is the kubelet's calcEphemeralStorage with no volume
// stats and no etc-hosts file of the agent's own: the containers' rootfs
// and logs plus the files directly in the pod's log directory, over the
// node filesystem's capacity.
func (p *Provider) ephemeralStorage(ps *statsapi.PodStats, pc podCtx) *statsapi.FsStats {
	out := &statsapi.FsStats{Time: metav1.NewTime(pc.rootFs.Time)}
	withCapacity(out, pc.rootFs)
	add := func(fs *statsapi.FsStats, inodes bool) {
		out.UsedBytes = addUsage(out.UsedBytes, fs.UsedBytes)
		if inodes {
			out.InodesUsed = addUsage(out.InodesUsed, fs.InodesUsed)
		}
		if out.Time.Before(&fs.Time) {
			out.Time = fs.Time
		}
	}
	for _, c := range ps.Containers {
		if c.Rootfs == nil {
			continue
		}
		add(c.Rootfs, true)
		if c.Logs != nil {
			add(c.Logs, true)
		}
	}
	if p.o.PodLogsDir != "" {
		dir := podLogsDir(p.o.PodLogsDir, ps.PodRef.Namespace, ps.PodRef.Name, ps.PodRef.UID)
		if logs, err := logUsage(dir, pc.rootFs); err == nil {
			add(logs, true)
		}
	}
	return out
}

// addUsage is the kubelet's: nil + x = x.
func addUsage(a, b *uint64) *uint64 {
	if a == nil {
		return copyPtr(b)
	}
	if b == nil {
		return a
	}
	s := *a + *b
	return &s
}

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

func u64(v *runtimeapi.UInt64Value) *uint64 {
	if v == nil {
		return nil
	}
	x := v.Value
	return &x
}
