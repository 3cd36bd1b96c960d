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

	allMetrics = []metricDef{mCPU, mMemUsage, mMemWS, mMemRSS, mFsUsage, mStartTime, mLastSeen,
		mRxBytes, mRxPackets, mRxDropped, mRxErrors, mTxBytes, mTxPackets, mTxDropped, mTxErrors}
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
		resp.PodMetrics = append(resp.PodMetrics, podSandboxMetrics(p, now))
	}
	return resp, nil
}

func podSandboxMetrics(p sandbox.PodStats, now time.Time) *runtimeapi.PodSandboxMetrics {
	pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: p.ID}
	podLV := []string{p.Name, p.Namespace, "", p.ID, ""}
	pm.Metrics = cgroupMetrics(p.Cgroup, podLV, now)
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
		cm := &runtimeapi.ContainerMetrics{ContainerId: c.ID, Metrics: cgroupMetrics(c.Cgroup, lv, now)}
		cm.Metrics = append(cm.Metrics,
			metric(mFsUsage, lv, now, c.WritableLayer.Bytes),
			metric(mLastSeen, lv, now, uint64(now.Unix())))
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
	if cg.HaveCPU {
		out = append(out, metric(mCPU, lv, ts, cg.CPUUsageNanos/uint64(time.Second)))
	}
	if cg.HaveM {
		out = append(out,
			metric(mMemUsage, lv, ts, cg.MemoryUsage),
			metric(mMemWS, lv, ts, cg.WorkingSet),
			metric(mMemRSS, lv, ts, cg.RSS))
	}
	return out
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
