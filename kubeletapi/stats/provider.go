// Package stats serves the kubelet's stats endpoints for peapod-agent in node
// mode, computed from the CRI and the machine:
//
//	GET /stats/summary[?only_cpu_and_memory=true]  statsapi.Summary as JSON
//	GET /metrics/resource                          what metrics-server reads
//	GET /metrics/cadvisor                          the runtime's CRI metrics, cAdvisor-labelled
//
// Pods and containers come from the CRI the way the kubelet's CRI stats
// provider takes them with PodAndContainerStatsFromCRI on
// (pkg/kubelet/stats/cri_stats_provider.go): ListPodSandbox and
// ListContainers say what exists, ListPodSandboxStats gives the figures,
// ImageFsInfo the image filesystem. The node's figures come from the kernel,
// as cAdvisor reads them for the root cgroup: /proc/stat, the root memory
// cgroup (or /proc/meminfo), /proc/net/dev, statfs of the node's root dir,
// and /proc/loadavg with kernel.pid_max for rlimit; the "pods" system
// container from the pods cgroup (pods_cgroup.go). A figure nobody reported
// stays nil in the JSON, as the kubelet leaves it; nothing is invented.
//
// The only state is a cache of the last CPU sample per container, pod and
// the node, to turn cumulative CPU time into usageNanoCores (cpu_usage.go),
// and what /metrics/cadvisor learnt from the runtime once (metric
// descriptors, each container's cgroup).
package stats

import (
	"net/http"
	"sync"
	"time"

	criapi "k8s.io/cri-api/pkg/apis"
	"k8s.io/klog/v2"
)

// Options are the sources of the figures.
type Options struct {
	// NodeName is the summary's node.nodeName.
	NodeName string
	// Runtime answers the pod and container figures.
	Runtime criapi.RuntimeService
	// Images answers ImageFsInfo (node.runtime.imageFs); nil leaves
	// node.runtime out.
	Images criapi.ImageManagerService
	// RootDir is on the node filesystem (nodefs): node.fs is its statfs, and
	// the capacity of container logs. Default "/".
	RootDir string
	// PodLogsDir holds <namespace>_<name>_<uid>/<container>/N.log, whose
	// sizes are the containers' logs figures. Empty: no logs figures.
	PodLogsDir string
	// PodsCgroup is the cgroupfs path of the cgroup all pods run under
	// ("/kubepods"): node.systemContainers then holds its CPU and memory
	// as the "pods" container, whose availableBytes the eviction manager
	// watches. Empty: no system containers.
	PodsCgroup string
}

// Provider computes the stats; its handlers are safe for concurrent use.
type Provider struct {
	o   Options
	cpu *cpuCache
	// host is where the node's figures are read; tests point it at fixtures.
	host hostPaths
	now  func() time.Time

	mu sync.Mutex
	// descriptors of the runtime's CRI metrics, by name, once it answered.
	descriptors map[string]criMetricDescriptor
	// cgroups maps a container or sandbox id to its cgroup ("" when the
	// runtime did not say), for /metrics/cadvisor's id label.
	cgroups map[string]string
}

// hostPaths are the kernel files the node's figures come from.
type hostPaths struct {
	proc   string // /proc
	cgroup string // /sys/fs/cgroup
}

// New returns a Provider. It takes the node's first CPU sample now, so the
// first summary already carries the node's usageNanoCores.
func New(o Options) *Provider {
	return newProvider(o, hostPaths{proc: "/proc", cgroup: "/sys/fs/cgroup"}, time.Now)
}

func newProvider(o Options, host hostPaths, now func() time.Time) *Provider {
	if o.RootDir == "" {
		o.RootDir = "/"
	}
	p := &Provider{
		o:       o,
		cpu:     newCPUCache(),
		host:    host,
		now:     now,
		cgroups: map[string]string{},
	}
	if _, err := p.nodeCPU(); err != nil {
		klog.V(2).InfoS("No first CPU sample of the node", "err", err)
	}
	return p
}

// readOnly answers 405 to anything but GET, HEAD and POST (the kubelet
// routes both GET and POST to /stats/summary).
func readOnly(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, HEAD, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h(w, r)
	})
}

// promLog carries promhttp's errors to klog.
type promLog struct{}

func (promLog) Println(v ...any) { klog.ErrorS(nil, "Serving metrics", "detail", v) }
