package volumes

import (
	"errors"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"

	"peapod/volumes/csiplugin"
)

// errAdopted marks an operation found already done on the node after a
// restart; it is counted with result="adopted".
var errAdopted = errors.New("adopted")

// metrics: peapod_volume_operations_total and, for volumes bound to a claim,
// the kubelet's kubelet_volume_stats_* gauges, statfs'd at scrape time.
type metrics struct {
	ops *prometheus.CounterVec

	mu      sync.RWMutex
	targets []statsTarget

	csiDrivers *csiplugin.Registry // NodeGetVolumeStats (csi.go)

	capacity, available, used, inodes, inodesFree, inodesUsed *prometheus.Desc
}

type statsTarget struct {
	namespace, claim, path string
	csi                    *csiStatsSource // nil: not a CSI volume
}

func newMetrics(*Manager) *metrics {
	labels := []string{"namespace", "persistentvolumeclaim"}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("kubelet_volume_stats_"+name, help, labels, nil)
	}
	return &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "peapod_volume_operations_total",
			Help: "Volume operations by operation (attach, mount_device, setup, update, subpath, teardown, unmount_device, detach), plugin and result (success, failure, adopted).",
		}, []string{"operation", "plugin", "result"}),
		capacity:   d("capacity_bytes", "Capacity in bytes of the volume."),
		available:  d("available_bytes", "Number of available bytes in the volume."),
		used:       d("used_bytes", "Number of used bytes in the volume."),
		inodes:     d("inodes", "Maximum number of inodes in the volume."),
		inodesFree: d("inodes_free", "Number of free inodes in the volume."),
		inodesUsed: d("inodes_used", "Number of used inodes in the volume."),
	}
}

func (mt *metrics) register(r prometheus.Registerer) error {
	if err := r.Register(mt.ops); err != nil {
		return err
	}
	return r.Register(mt)
}

func (mt *metrics) op(op, plugin string, err error) {
	res := "success"
	switch {
	case errors.Is(err, errAdopted):
		res = "adopted"
	case err != nil:
		res = "failure"
	}
	mt.ops.WithLabelValues(op, plugin, res).Inc()
}

// snapshot records the ready claim volumes for the collector (called with
// the Manager's lock held, so Collect never waits for a slow mount).
func (mt *metrics) snapshot(pods map[types.UID]*podEntry) {
	seen := map[string]bool{}
	var ts []statsTarget
	for _, pe := range pods {
		if pe.terminating {
			continue
		}
		for _, vs := range pe.volumes {
			st := pe.state[vs.Name]
			if vs.Claim == "" || st == nil || !st.ready || seen[vs.Claim] {
				continue
			}
			seen[vs.Claim] = true
			ts = append(ts, statsTarget{namespace: pe.pod.Namespace, claim: vs.Claim[len(pe.pod.Namespace)+1:], path: st.hostPath, csi: csiStatsFor(vs)})
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].namespace+"/"+ts[i].claim < ts[j].namespace+"/"+ts[j].claim })
	mt.mu.Lock()
	mt.targets = ts
	mt.mu.Unlock()
}

func (mt *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mt.capacity, mt.available, mt.used, mt.inodes, mt.inodesFree, mt.inodesUsed} {
		ch <- d
	}
}

func (mt *metrics) Collect(ch chan<- prometheus.Metric) {
	mt.mu.RLock()
	ts := mt.targets
	mt.mu.RUnlock()
	for _, t := range ts {
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, t.namespace, t.claim)
		}
		if u, ok := mt.csiUsage(t); ok {
			g(mt.capacity, u.capacity)
			g(mt.available, u.available)
			g(mt.used, u.used)
			if u.hasInodes {
				g(mt.inodes, u.inodes)
				g(mt.inodesFree, u.inodesFree)
				g(mt.inodesUsed, u.inodesUsed)
			}
			continue
		}
		var s unix.Statfs_t
		if err := unix.Statfs(t.path, &s); err != nil {
			continue
		}
		bs := float64(s.Bsize)
		g(mt.capacity, float64(s.Blocks)*bs)
		g(mt.available, float64(s.Bavail)*bs)
		g(mt.used, float64(s.Blocks-s.Bfree)*bs)
		g(mt.inodes, float64(s.Files))
		g(mt.inodesFree, float64(s.Ffree))
		g(mt.inodesUsed, float64(s.Files-s.Ffree))
	}
}
