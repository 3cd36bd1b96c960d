package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox"
)

// NodeSource is what the node collector reads: every pod with its
// containers, and the node's root cgroup. *sandbox.Manager serves both from
// its one-second stats cache (sandbox/stats.go), which the CRI stats calls
// share, so a scrape reads no cgroup that the kubelet's last poll read less
// than a second ago.
type NodeSource interface {
	AllStats() []sandbox.PodStats
	NodeStats() sandbox.CgroupStats
}

// Labels of the per-container series, as the kubelet's cAdvisor endpoint
// names them: container (metadata.name, "" for the pod-level series), pod,
// namespace, id (the cgroup path, as cAdvisor's), image ("" for pod-level).
var containerLabels = []string{"container", "pod", "namespace", "id", "image"}

// NodeCollector exports per-container and per-pod usage under the names
// users already graph from cAdvisor, node totals under the kubelet's
// resource-metrics names, and the runtime's pod and container counts.
type NodeCollector struct {
	src NodeSource

	cpu, memWS, memRSS, memUsage, fsUsage, startTime *prometheus.Desc
	rxBytes, txBytes, rxPackets, txPackets           *prometheus.Desc
	rxErrors, txErrors                               *prometheus.Desc
	nodeCPU, nodeMemWS                               *prometheus.Desc
	runningPods, runningContainers, restarts         *prometheus.Desc
	collectSeconds                                   *prometheus.Desc
}

// NewNodeCollector builds the collector; register it with reg.MustRegister.
func NewNodeCollector(src NodeSource) *NodeCollector {
	d := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append(append([]string(nil), containerLabels...), extra...), nil)
	}
	return &NodeCollector{
		src:       src,
		cpu:       d("container_cpu_usage_seconds_total", "Cumulative CPU time consumed, in seconds."),
		memWS:     d("container_memory_working_set_bytes", "Current working set (usage minus inactive file pages), in bytes."),
		memRSS:    d("container_memory_rss", "Size of RSS (anonymous memory), in bytes."),
		memUsage:  d("container_memory_usage_bytes", "Current memory usage including all memory regardless of when it was accessed, in bytes."),
		fsUsage:   d("container_fs_usage_bytes", "Bytes used by the container's writable layer."),
		startTime: d("container_start_time_seconds", "Start time of the container (pod-level: of the sandbox) since the Unix epoch, in seconds."),
		rxBytes:   d("container_network_receive_bytes_total", "Cumulative bytes received, per pod interface.", "interface"),
		txBytes:   d("container_network_transmit_bytes_total", "Cumulative bytes transmitted, per pod interface.", "interface"),
		rxPackets: d("container_network_receive_packets_total", "Cumulative packets received, per pod interface.", "interface"),
		txPackets: d("container_network_transmit_packets_total", "Cumulative packets transmitted, per pod interface.", "interface"),
		rxErrors:  d("container_network_receive_errors_total", "Cumulative receive errors, per pod interface.", "interface"),
		txErrors:  d("container_network_transmit_errors_total", "Cumulative transmit errors, per pod interface.", "interface"),
		nodeCPU:   prometheus.NewDesc("node_cpu_usage_seconds_total", "Cumulative CPU time of the whole node (root cgroup), in seconds.", nil, nil),
		nodeMemWS: prometheus.NewDesc("node_memory_working_set_bytes", "Working set of the whole node (root cgroup), in bytes.", nil, nil),
		runningPods: prometheus.NewDesc("peapod_running_pods",
			"Pod sandboxes in the READY state.", nil, nil),
		runningContainers: prometheus.NewDesc("peapod_running_containers",
			"Containers by state (created, running, exited, unknown).", []string{"container_state"}, nil),
		restarts: prometheus.NewDesc("peapod_cri_container_restarts",
			"Restarts of a pod's container as the CRI caller counts them: metadata.attempt of its newest container.",
			[]string{"container", "pod", "namespace"}, nil),
		collectSeconds: prometheus.NewDesc("peapod_node_stats_collect_duration_seconds",
			"Time the last collection of node, pod and container figures took.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *NodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.cpu, c.memWS, c.memRSS, c.memUsage, c.fsUsage, c.startTime,
		c.rxBytes, c.txBytes, c.rxPackets, c.txPackets, c.rxErrors, c.txErrors,
		c.nodeCPU, c.nodeMemWS, c.runningPods, c.runningContainers, c.restarts, c.collectSeconds} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *NodeCollector) Collect(ch chan<- prometheus.Metric) {
	start := time.Now()
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	if node := c.src.NodeStats(); node.HaveCPU || node.HaveM {
		if node.HaveCPU {
			counter(c.nodeCPU, float64(node.CPUUsageNanos)/1e9)
		}
		if node.HaveM {
			gauge(c.nodeMemWS, float64(node.WorkingSet))
		}
	}
	states := map[runtimeapi.ContainerState]int{}
	ready := 0
	type restartKey struct{ container, pod, namespace string }
	restarts := map[restartKey]uint32{}
	for _, p := range c.src.AllStats() {
		for _, ct := range p.Containers {
			states[ct.State]++
			k := restartKey{ct.Name, p.Name, p.Namespace}
			if a, ok := restarts[k]; !ok || ct.Attempt > a {
				restarts[k] = ct.Attempt
			}
		}
		if !p.Ready {
			continue
		}
		ready++
		podLV := []string{"", p.Name, p.Namespace, p.CgroupParent, ""}
		c.usage(p.Cgroup, podLV, gauge, counter)
		gauge(c.startTime, float64(p.CreatedAt.UnixNano())/1e9, podLV...)
		for _, i := range p.Network.Interfaces {
			lv := append(append([]string(nil), podLV...), i.Name)
			counter(c.rxBytes, float64(i.RxBytes), lv...)
			counter(c.txBytes, float64(i.TxBytes), lv...)
			counter(c.rxPackets, float64(i.RxPackets), lv...)
			counter(c.txPackets, float64(i.TxPackets), lv...)
			counter(c.rxErrors, float64(i.RxErrors), lv...)
			counter(c.txErrors, float64(i.TxErrors), lv...)
		}
		for _, ct := range p.Containers {
			if ct.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				continue
			}
			lv := []string{ct.Name, p.Name, p.Namespace, ct.CgroupsPath, ct.Image}
			c.usage(ct.Cgroup, lv, gauge, counter)
			gauge(c.fsUsage, float64(ct.WritableLayer.Bytes), lv...)
			if !ct.StartedAt.IsZero() {
				gauge(c.startTime, float64(ct.StartedAt.UnixNano())/1e9, lv...)
			}
		}
	}
	gauge(c.runningPods, float64(ready))
	for _, s := range []runtimeapi.ContainerState{runtimeapi.ContainerState_CONTAINER_CREATED, runtimeapi.ContainerState_CONTAINER_RUNNING,
		runtimeapi.ContainerState_CONTAINER_EXITED, runtimeapi.ContainerState_CONTAINER_UNKNOWN} {
		gauge(c.runningContainers, float64(states[s]), containerStateName(s))
	}
	for k, a := range restarts {
		gauge(c.restarts, float64(a), k.container, k.pod, k.namespace)
	}
	gauge(c.collectSeconds, time.Since(start).Seconds())
}

func (c *NodeCollector) usage(cg sandbox.CgroupStats, lv []string, gauge, counter func(*prometheus.Desc, float64, ...string)) {
	if cg.HaveCPU {
		counter(c.cpu, float64(cg.CPUUsageNanos)/1e9, lv...)
	}
	if cg.HaveM {
		gauge(c.memWS, float64(cg.WorkingSet), lv...)
		gauge(c.memRSS, float64(cg.RSS), lv...)
		gauge(c.memUsage, float64(cg.MemoryUsage), lv...)
	}
}

// containerStateName is the kubelet's container_state label value.
func containerStateName(s runtimeapi.ContainerState) string {
	switch s {
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		return "created"
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		return "running"
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		return "exited"
	default:
		return "unknown"
	}
}

// PodStart is the histogram of pod start durations as the runtime sees
// them (sandbox/pod_start.go has the definition): from the beginning of
// RunPodSandbox to the StartContainer that leaves all of the pod's
// containers running. The agent's peapod_pod_start_duration_seconds starts
// earlier, at its pod worker, and includes image pulls.
type PodStart struct{ h prometheus.Histogram }

// NewPodStart registers the histogram on reg.
func NewPodStart(reg prometheus.Registerer) *PodStart {
	p := &PodStart{h: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "peapod_cri_pod_start_duration_seconds",
		Help:    "Time from the start of RunPodSandbox to the StartContainer that leaves all of the pod's containers running.",
		Buckets: []float64{.05, .1, .15, .2, .3, .5, .75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120},
	})}
	reg.MustRegister(p.h)
	return p
}

// Observe records one pod start; its signature fits sandbox.Manager.OnPodStart.
func (p *PodStart) Observe(_ string, d time.Duration) { p.h.Observe(d.Seconds()) }
