package cri

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox"
)

// CRI metrics: the cAdvisor-named series the kubelet serves on
// /metrics/cadvisor when PodAndContainerStatsFromCRI is on, from the same
// one-second stats cache as ListContainerStats and peapod's own /metrics.
//
// Label keys are containerd's (pod, namespace, container, id, image; plus
// interface for network series), with id the container's or the sandbox's
// CRI id. The CRI carries values as unsigned integers: CPU time is in
// whole seconds, as containerd and CRI-O report it.

var (
	metricLabels        = []string{"pod", "namespace", "container", "id", "image"}
	metricNetworkLabels = append(append([]string(nil), metricLabels...), "interface")
	metricDeviceLabels  = append(append([]string(nil), metricLabels...), "device")
	metricFailureLabels = append(append([]string(nil), metricLabels...), "failure_type", "scope")
	metricBlkioLabels   = append(append([]string(nil), metricLabels...), "device", "major", "minor", "operation")
)

type metricDef struct {
	desc *runtimeapi.MetricDescriptor
	typ  runtimeapi.MetricType
}

func def(name, help string, typ runtimeapi.MetricType, labels []string) metricDef {
	return metricDef{desc: &runtimeapi.MetricDescriptor{Name: name, Help: help, LabelKeys: labels}, typ: typ}
}

var (
	mCPU       = def("container_cpu_usage_seconds_total", "Cumulative CPU time consumed, in whole seconds.", runtimeapi.MetricType_COUNTER, metricLabels)
	mMemUsage  = def("container_memory_usage_bytes", "Current memory usage including all memory regardless of when it was accessed, in bytes.", runtimeapi.MetricType_GAUGE, metricLabels)
	mMemWS     = def("container_memory_working_set_bytes", "Current working set (usage minus inactive file pages), in bytes.", runtimeapi.MetricType_GAUGE, metricLabels)
	mMemRSS    = def("container_memory_rss", "Size of RSS (anonymous memory), in bytes.", runtimeapi.MetricType_GAUGE, metricLabels)
	mFsUsage   = def("container_fs_usage_bytes", "Bytes used by the container's writable layer.", runtimeapi.MetricType_GAUGE, metricLabels)
	mStartTime = def("container_start_time_seconds", "Start time of the container (pod-level: of the sandbox) since the Unix epoch, in seconds.", runtimeapi.MetricType_GAUGE, metricLabels)
	mLastSeen  = def("container_last_seen", "Last time the container was seen by the runtime, in seconds since the Unix epoch.", runtimeapi.MetricType_GAUGE, metricLabels)
	mRxBytes   = def("container_network_receive_bytes_total", "Cumulative bytes received, per pod interface.", runtimeapi.MetricType_COUNTER, metricNetworkLabels)
	mRxPackets = def("container_network_receive_packets_total", "Cumulative packets received, per pod interface.", runtimeapi.MetricType_COUNTER, metricNetworkLabels)
	mRxDropped = def("container_network_receive_packets_dropped_total", "Cumulative packets dropped while receiving, per pod interface.", runtimeapi.MetricType_COUNTER, metricNetworkLabels)
	mRxErrors  = def("container_network_receive_errors_total", "Cumulative receive errors, per pod interface.", runtimeapi.MetricType_COUNTER, metricNetworkLabels)
	mTxBytes   = def("container_network_transmit_bytes_total", "Cumulative bytes transmitted, per pod interface.", runtimeapi.MetricType_COUNTER, metricNetworkLabels)
	mTxPackets = def("container_network_transmit_packets_total", "Cumulative packets transmitted, per pod interface.", runtimeapi.MetricType_COUNTER, metricNetworkLabels)
	mTxDropped = def("container_network_transmit_packets_dropped_total", "Cumulative packets dropped while transmitting, per pod interface.", runtimeapi.MetricType_COUNTER, metricNetworkLabels)
	mTxErrors  = def("container_network_transmit_errors_total", "Cumulative transmit errors, per pod interface.", runtimeapi.MetricType_COUNTER, metricNetworkLabels)

	mCPUUser       = def("container_cpu_user_seconds_total", "Cumulative user CPU time consumed, in whole seconds.", runtimeapi.MetricType_COUNTER, metricLabels)
	mCPUSystem     = def("container_cpu_system_seconds_total", "Cumulative system CPU time consumed, in whole seconds.", runtimeapi.MetricType_COUNTER, metricLabels)
	mCFSPeriods    = def("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", runtimeapi.MetricType_COUNTER, metricLabels)
	mCFSThrottled  = def("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", runtimeapi.MetricType_COUNTER, metricLabels)
	mCFSThrottledS = def("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled, in whole seconds.", runtimeapi.MetricType_COUNTER, metricLabels)
	mMemCache      = def("container_memory_cache", "Number of bytes of page cache memory.", runtimeapi.MetricType_GAUGE, metricLabels)
	mMemMapped     = def("container_memory_mapped_file", "Size of memory mapped files, in bytes.", runtimeapi.MetricType_GAUGE, metricLabels)
	mMemSwap       = def("container_memory_swap", "Container swap usage, in bytes.", runtimeapi.MetricType_GAUGE, metricLabels)
	mMemKernel     = def("container_memory_kernel_usage", "Size of kernel memory allocated, in bytes.", runtimeapi.MetricType_GAUGE, metricLabels)
	mMemMax        = def("container_memory_max_usage_bytes", "Maximum memory usage recorded, in bytes.", runtimeapi.MetricType_GAUGE, metricLabels)
	mMemFailcnt    = def("container_memory_failcnt", "Number of memory usage hits limits.", runtimeapi.MetricType_COUNTER, metricLabels)
	mMemFailures   = def("container_memory_failures_total", "Cumulative count of memory allocation failures (page faults).", runtimeapi.MetricType_COUNTER, metricFailureLabels)
	mOOMEvents     = def("container_oom_events_total", "Count of out of memory events observed for the container.", runtimeapi.MetricType_COUNTER, metricLabels)
	mProcesses     = def("container_processes", "Number of processes running inside the container.", runtimeapi.MetricType_GAUGE, metricLabels)
	mThreads       = def("container_threads", "Number of threads running inside the container.", runtimeapi.MetricType_GAUGE, metricLabels)
	mThreadsMax    = def("container_threads_max", "Maximum number of threads allowed inside the container, 0 for unlimited.", runtimeapi.MetricType_GAUGE, metricLabels)
	mFDs           = def("container_file_descriptors", "Number of open file descriptors for the container.", runtimeapi.MetricType_GAUGE, metricLabels)
	mSockets       = def("container_sockets", "Number of open sockets for the container.", runtimeapi.MetricType_GAUGE, metricLabels)
	mFsInodesFree  = def("container_fs_inodes_free", "Number of available inodes on the file system of the container's writable layer.", runtimeapi.MetricType_GAUGE, metricDeviceLabels)
	mFsInodesTotal = def("container_fs_inodes_total", "Number of inodes on the file system of the container's writable layer.", runtimeapi.MetricType_GAUGE, metricDeviceLabels)
	mFsLimit       = def("container_fs_limit_bytes", "Number of bytes the file system of the container's writable layer can hold.", runtimeapi.MetricType_GAUGE, metricDeviceLabels)
	mSpecPeriod    = def("container_spec_cpu_period", "CPU period of the container.", runtimeapi.MetricType_GAUGE, metricLabels)
	mSpecQuota     = def("container_spec_cpu_quota", "CPU quota of the container.", runtimeapi.MetricType_GAUGE, metricLabels)
	mSpecShares    = def("container_spec_cpu_shares", "CPU share of the container.", runtimeapi.MetricType_GAUGE, metricLabels)
	mSpecMem       = def("container_spec_memory_limit_bytes", "Memory limit of the container, in bytes.", runtimeapi.MetricType_GAUGE, metricLabels)
	mSpecSwap      = def("container_spec_memory_swap_limit_bytes", "Memory swap limit of the container, in bytes.", runtimeapi.MetricType_GAUGE, metricLabels)
	// Described for the kubelet's sake, never reported: peapod does not
	// read blkio (its per-device figures need the block device's names).
	mBlkio       = def("container_blkio_device_usage_total", "Blkio device bytes usage (not reported by peapod).", runtimeapi.MetricType_COUNTER, metricBlkioLabels)
	mFsReads     = def("container_fs_reads_total", "Cumulative count of reads completed (not reported by peapod).", runtimeapi.MetricType_COUNTER, metricDeviceLabels)
	mFsReadBytes = def("container_fs_reads_bytes_total", "Cumulative count of bytes read (not reported by peapod).", runtimeapi.MetricType_COUNTER, metricDeviceLabels)
	mFsWrites    = def("container_fs_writes_total", "Cumulative count of writes completed (not reported by peapod).", runtimeapi.MetricType_COUNTER, metricDeviceLabels)
	mFsWriteByts = def("container_fs_writes_bytes_total", "Cumulative count of bytes written (not reported by peapod).", runtimeapi.MetricType_COUNTER, metricDeviceLabels)

	allMetrics = []metricDef{mCPU, mCPUUser, mCPUSystem, mCFSPeriods, mCFSThrottled, mCFSThrottledS,
		mMemUsage, mMemWS, mMemRSS, mMemCache, mMemMapped, mMemSwap, mMemKernel, mMemMax, mMemFailcnt, mMemFailures, mOOMEvents,
		mProcesses, mThreads, mThreadsMax, mFDs, mSockets,
		mFsUsage, mFsInodesFree, mFsInodesTotal, mFsLimit, mStartTime, mLastSeen,
		mSpecPeriod, mSpecQuota, mSpecShares, mSpecMem, mSpecSwap,
		mRxBytes, mRxPackets, mRxDropped, mRxErrors, mTxBytes, mTxPackets, mTxDropped, mTxErrors,
		mBlkio, mFsReads, mFsReadBytes, mFsWrites, mFsWriteByts}
)

// ListMetricDescriptors names every series ListPodSandboxMetrics returns.
func (s *Server) ListMetricDescriptors(context.Context, *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	resp := &runtimeapi.ListMetricDescriptorsResponse{}
	for _, m := range allMetrics {
		resp.Descriptors = append(resp.Descriptors, m.desc)
	}
	return resp, nil
}

// ListPodSandboxMetrics reports the series of every ready sandbox and its
// running containers.
func (s *Server) ListPodSandboxMetrics(context.Context, *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	resp := &runtimeapi.ListPodSandboxMetricsResponse{}
	now := timeNow()
	for _, p := range s.deps.Sandboxes.AllStats() {
		if !p.Ready {
			continue
		}
		resp.PodMetrics = append(resp.PodMetrics, podSandboxMetrics(p, now, s.deps.Sandboxes))
	}
	return resp, nil
}

// cgroupDetails reads what only CRI metrics need (its own cached reads:
// more files per cgroup, the processes' descriptors).
type cgroupDetails interface {
	CgroupDetails(path string, cg sandbox.CgroupStats) sandbox.CgroupStats
	TaskCounts(path string) sandbox.TaskCounts
}

func podSandboxMetrics(p sandbox.PodStats, now time.Time, d cgroupDetails) *runtimeapi.PodSandboxMetrics {
	pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: p.ID}
	podLV := []string{p.Name, p.Namespace, "", p.ID, ""}
	pm.Metrics = cgroupMetrics(d.CgroupDetails(p.CgroupParent, p.Cgroup), podLV, now)
	pm.Metrics = append(pm.Metrics, taskMetrics(d.TaskCounts(p.CgroupParent), podLV, now)...)
	pm.Metrics = append(pm.Metrics, metric(mStartTime, podLV, now, uint64(p.CreatedAt.Unix())))
	ts := p.Network.Timestamp
	if ts.IsZero() {
		ts = now
	}
	for _, i := range p.Network.Interfaces {
		lv := append(append([]string(nil), podLV...), i.Name)
		for _, x := range []struct {
			m metricDef
			v uint64
		}{{mRxBytes, i.RxBytes}, {mRxPackets, i.RxPackets}, {mRxDropped, i.RxDropped}, {mRxErrors, i.RxErrors},
			{mTxBytes, i.TxBytes}, {mTxPackets, i.TxPackets}, {mTxDropped, i.TxDropped}, {mTxErrors, i.TxErrors}} {
			pm.Metrics = append(pm.Metrics, metric(x.m, lv, ts, x.v))
		}
	}
	for _, c := range p.Containers {
		if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		lv := []string{p.Name, p.Namespace, c.Name, c.ID, c.Image}
		cm := &runtimeapi.ContainerMetrics{ContainerId: c.ID, Metrics: cgroupMetrics(d.CgroupDetails(c.CgroupsPath, c.Cgroup), lv, now)}
		cm.Metrics = append(cm.Metrics, taskMetrics(d.TaskCounts(c.CgroupsPath), lv, now)...)
		devLV := append(append([]string(nil), lv...), c.WritableLayer.Path)
		r := c.Resources
		cm.Metrics = append(cm.Metrics,
			metric(mFsUsage, lv, now, c.WritableLayer.Bytes),
			metric(mFsInodesFree, devLV, now, c.WritableLayer.InodesFree),
			metric(mFsInodesTotal, devLV, now, c.WritableLayer.InodesTotal),
			metric(mFsLimit, devLV, now, c.WritableLayer.CapacityBytes),
			metric(mLastSeen, lv, now, uint64(now.Unix())),
			metric(mSpecPeriod, lv, now, uint64(max(r.GetCpuPeriod(), 0))),
			metric(mSpecQuota, lv, now, uint64(max(r.GetCpuQuota(), 0))),
			metric(mSpecShares, lv, now, uint64(max(r.GetCpuShares(), 0))),
			metric(mSpecMem, lv, now, uint64(max(r.GetMemoryLimitInBytes(), 0))),
			metric(mSpecSwap, lv, now, uint64(max(r.GetMemorySwapLimitInBytes(), 0))))
		if !c.StartedAt.IsZero() {
			cm.Metrics = append(cm.Metrics, metric(mStartTime, lv, now, uint64(c.StartedAt.Unix())))
		}
		pm.ContainerMetrics = append(pm.ContainerMetrics, cm)
	}
	return pm
}

func cgroupMetrics(cg sandbox.CgroupStats, lv []string, now time.Time) []*runtimeapi.Metric {
	ts := cg.Timestamp
	if ts.IsZero() {
		ts = now
	}
	var out []*runtimeapi.Metric
	x := cg.Extra
	sec := uint64(time.Second)
	if cg.HaveCPU {
		out = append(out,
			metric(mCPU, lv, ts, cg.CPUUsageNanos/sec),
			metric(mCPUUser, lv, ts, x.CPUUserNanos/sec),
			metric(mCPUSystem, lv, ts, x.CPUSystemNanos/sec),
			metric(mCFSPeriods, lv, ts, x.CFSPeriods),
			metric(mCFSThrottled, lv, ts, x.CFSThrottledPeriods),
			metric(mCFSThrottledS, lv, ts, x.CFSThrottledNanos/sec))
	}
	if cg.HaveM {
		fail := func(typ, scope string) []string { return append(append([]string(nil), lv...), typ, scope) }
		out = append(out,
			metric(mMemUsage, lv, ts, cg.MemoryUsage),
			metric(mMemWS, lv, ts, cg.WorkingSet),
			metric(mMemRSS, lv, ts, cg.RSS),
			metric(mMemCache, lv, ts, x.Cache),
			metric(mMemMapped, lv, ts, x.MappedFile),
			metric(mMemSwap, lv, ts, x.Swap),
			metric(mMemKernel, lv, ts, x.KernelUsage),
			metric(mMemMax, lv, ts, x.MaxUsage),
			metric(mMemFailcnt, lv, ts, x.Failcnt),
			metric(mMemFailures, fail("pgfault", "container"), ts, cg.PageFaults),
			metric(mMemFailures, fail("pgmajfault", "container"), ts, cg.MajorFaults),
			metric(mOOMEvents, lv, ts, x.OOMKills))
	}
	return out
}

func taskMetrics(tc sandbox.TaskCounts, lv []string, ts time.Time) []*runtimeapi.Metric {
	return []*runtimeapi.Metric{
		metric(mProcesses, lv, ts, tc.Processes),
		metric(mThreads, lv, ts, tc.Threads),
		metric(mThreadsMax, lv, ts, tc.ThreadsMax),
		metric(mFDs, lv, ts, tc.FileDescriptors),
		metric(mSockets, lv, ts, tc.Sockets),
	}
}

func metric(m metricDef, lv []string, ts time.Time, v uint64) *runtimeapi.Metric {
	return &runtimeapi.Metric{
		Name:        m.desc.Name,
		Timestamp:   ts.UnixNano(),
		MetricType:  m.typ,
		LabelValues: lv,
		Value:       &runtimeapi.UInt64Value{Value: v},
	}
}
