package stats

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// CadvisorMetrics serves GET /metrics/cadvisor: the container_* series the
// runtime reports through the CRI (ListMetricDescriptors once, then
// ListPodSandboxMetrics per scrape; peapod serves cAdvisor's names there),
// as the kubelet does with PodAndContainerStatsFromCRI, but labelled as the
// kubelet labels cAdvisor's own series, so dashboards written for those
// keep working:
//
//	container, pod, namespace, image  the runtime's values
//	id    the cgroup (/kubepods/…/pod<uid>/<container id>) when the runtime's
//	      verbose ContainerStatus / PodSandboxStatus names it, else the
//	      runtime's id label (the CRI id)
//	name  the container's CRI id, "" on pod-level series (cAdvisor's alias)
//	cpu   "total" on container_cpu_usage_seconds_total (the kubelet turns
//	      cAdvisor's per-CPU figures off)
//
// plus any other label the runtime declares (interface, device, ...). The
// machine_* series the kubelet adds from cAdvisor's machine info are not
// served.
//
// A runtime that answers Unimplemented (it has no CRI metrics) gets an empty
// body, as do runtime errors (logged): the kubelet's CRI metrics collector
// also serves nothing from a runtime that fails, rather than an error.
func (p *Provider) CadvisorMetrics() http.Handler {
	return readOnly(func(w http.ResponseWriter, r *http.Request) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(&criMetricsCollector{p: p, ctx: r.Context()})
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, ErrorLog: promLog{}}).ServeHTTP(w, r)
	})
}

// cAdvisor's labels on every container series, in its order.
var cadvisorLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

// criMetricDescriptor is one runtime descriptor, relabelled.
type criMetricDescriptor struct {
	desc *prometheus.Desc
	// at[i] is where the runtime's i-th label value goes among ours.
	at []int
	// name, id and cpu are the indexes of the labels set here, -1 if none.
	name, id, cpu int
	nLabels       int
}

func newCRIMetricDescriptor(d *runtimeapi.MetricDescriptor) criMetricDescriptor {
	keys := slices.Clone(cadvisorLabels)
	addCPU := d.Name == "container_cpu_usage_seconds_total" && !slices.Contains(d.LabelKeys, "cpu")
	if addCPU {
		keys = append(keys, "cpu")
	}
	out := criMetricDescriptor{name: -1, id: -1, cpu: -1}
	for _, k := range d.LabelKeys {
		i := slices.Index(keys, k)
		if i < 0 {
			keys = append(keys, k)
			i = len(keys) - 1
		}
		out.at = append(out.at, i)
	}
	if !slices.Contains(d.LabelKeys, "name") {
		out.name = slices.Index(keys, "name")
	}
	out.id = slices.Index(keys, "id")
	if addCPU {
		out.cpu = slices.Index(keys, "cpu")
	}
	out.nLabels = len(keys)
	out.desc = prometheus.NewDesc(d.Name, d.Help, keys, nil)
	return out
}

// descriptorsOf returns the runtime's metric descriptors, asking it until it
// answers once.
func (p *Provider) descriptorsOf(ctx context.Context) (map[string]criMetricDescriptor, error) {
	p.mu.Lock()
	d := p.descriptors
	p.mu.Unlock()
	if d != nil {
		return d, nil
	}
	descs, err := p.o.Runtime.ListMetricDescriptors(ctx)
	if err != nil {
		return nil, err
	}
	d = make(map[string]criMetricDescriptor, len(descs))
	for _, desc := range descs {
		d[desc.Name] = newCRIMetricDescriptor(desc)
	}
	p.mu.Lock()
	p.descriptors = d
	p.mu.Unlock()
	return d, nil
}

// criMetricsCollector collects one scrape; it lives for one request.
type criMetricsCollector struct {
	p   *Provider
	ctx context.Context
}

// Describe sends nothing: the series are the runtime's (an unchecked
// collector).
func (c *criMetricsCollector) Describe(chan<- *prometheus.Desc) {}

func (c *criMetricsCollector) Collect(ch chan<- prometheus.Metric) {
	descs, err := c.p.descriptorsOf(c.ctx)
	if err == nil {
		var pods []*runtimeapi.PodSandboxMetrics
		if pods, err = c.p.o.Runtime.ListPodSandboxMetrics(c.ctx); err == nil {
			c.collect(ch, descs, pods)
			return
		}
	}
	if status.Code(err) == codes.Unimplemented {
		// The runtime has no CRI metrics: an empty body, not an error.
		klog.V(4).InfoS("The runtime serves no CRI metrics; /metrics/cadvisor is empty", "err", err)
		return
	}
	klog.ErrorS(err, "Failed to get the runtime's pod metrics")
}

func (c *criMetricsCollector) collect(ch chan<- prometheus.Metric, descs map[string]criMetricDescriptor, pods []*runtimeapi.PodSandboxMetrics) {
	seen := map[string]bool{}
	for _, pm := range pods {
		podCgroup := c.p.cgroupOf(c.ctx, pm.PodSandboxId, true)
		seen[pm.PodSandboxId] = true
		for _, m := range pm.Metrics {
			if out, ok := relabel(descs, m, "", podCgroup); ok {
				ch <- out
			}
		}
		for _, cm := range pm.ContainerMetrics {
			cg := c.p.cgroupOf(c.ctx, cm.ContainerId, false)
			seen[cm.ContainerId] = true
			for _, m := range cm.Metrics {
				if out, ok := relabel(descs, m, cm.ContainerId, cg); ok {
					ch <- out
				}
			}
		}
	}
	c.p.mu.Lock()
	for id := range c.p.cgroups {
		if !seen[id] {
			delete(c.p.cgroups, id)
		}
	}
	c.p.mu.Unlock()
}

// relabel turns one CRI metric into a Prometheus sample with cAdvisor's
// labels; containerID is "" for pod-level series, cgroup "" when unknown.
func relabel(descs map[string]criMetricDescriptor, m *runtimeapi.Metric, containerID, cgroup string) (prometheus.Metric, bool) {
	d, ok := descs[m.Name]
	if !ok || m.GetValue() == nil || len(m.LabelValues) != len(d.at) {
		klog.V(5).InfoS("Dropping a CRI metric without a matching descriptor", "name", m.Name)
		return nil, false
	}
	values := make([]string, d.nLabels)
	for i, v := range m.LabelValues {
		values[d.at[i]] = v
	}
	if d.name >= 0 {
		values[d.name] = containerID
	}
	if cgroup != "" {
		values[d.id] = cgroup
	}
	if d.cpu >= 0 {
		values[d.cpu] = "total"
	}
	typ := prometheus.UntypedValue
	switch m.MetricType {
	case runtimeapi.MetricType_COUNTER:
		typ = prometheus.CounterValue
	case runtimeapi.MetricType_GAUGE:
		typ = prometheus.GaugeValue
	}
	out, err := prometheus.NewConstMetric(d.desc, typ, float64(m.GetValue().GetValue()), values...)
	if err != nil {
		klog.V(5).InfoS("Dropping a CRI metric", "name", m.Name, "err", err)
		return nil, false
	}
	// A zero timestamp: the runtime measured on demand (the kubelet's rule).
	if m.Timestamp != 0 {
		out = prometheus.NewMetricWithTimestamp(time.Unix(0, m.Timestamp), out)
	}
	return out, true
}

// cgroupOf returns the cgroup of a container or sandbox from the runtime's
// verbose status, asked once per id; "" when the runtime does not say.
func (p *Provider) cgroupOf(ctx context.Context, id string, sandbox bool) string {
	p.mu.Lock()
	cg, ok := p.cgroups[id]
	p.mu.Unlock()
	if ok {
		return cg
	}
	var info map[string]string
	if sandbox {
		resp, err := p.o.Runtime.PodSandboxStatus(ctx, id, true)
		if err != nil {
			return "" // asked again next scrape
		}
		info = resp.GetInfo()
		cg = cgroupFromInfo(info["info"], []string{"cgroupParent"}, []string{"config", "linux", "cgroup_parent"})
	} else {
		resp, err := p.o.Runtime.ContainerStatus(ctx, id, true)
		if err != nil {
			return ""
		}
		info = resp.GetInfo()
		cg = cgroupFromInfo(info["info"], []string{"cgroupsPath"}, []string{"runtimeSpec", "linux", "cgroupsPath"})
	}
	p.mu.Lock()
	p.cgroups[id] = cg
	p.mu.Unlock()
	return cg
}

// cgroupFromInfo finds a cgroupfs path in a verbose status' JSON "info" at
// the first of paths that holds one: peapod's layout first, then
// containerd's. A systemd-style "slice:prefix:name" is not a cgroup path
// and gives "".
func cgroupFromInfo(info string, paths ...[]string) string {
	if info == "" {
		return ""
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(info), &doc); err != nil {
		return ""
	}
	for _, path := range paths {
		var cur any = doc
		for _, k := range path {
			m, ok := cur.(map[string]any)
			if !ok {
				cur = nil
				break
			}
			cur = m[k]
		}
		if s, ok := cur.(string); ok && strings.HasPrefix(s, "/") {
			return s
		}
	}
	return ""
}
