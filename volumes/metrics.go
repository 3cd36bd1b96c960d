package volumes

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"

	"peapod/volumes/csiplugin"
)

// errAdopted marks an operation found already done on the node after a
// restart; it is counted with result="adopted".
var errAdopted = errors.New("adopted")

// metrics: peapod_volume_operations_total and, for volumes bound to a claim,
// the kubelet's kubelet_volume_stats_* gauges. Usage is measured (statfs,
// or the driver's NodeGetVolumeStats) when a volume is first scraped and
// then every statsPeriod in the background, as the kubelet's volume stats
// aggregation does: a scrape never waits on a hung driver or mount again.
type metrics struct {
	ops *prometheus.CounterVec

	mu      sync.RWMutex
	targets []statsTarget
	// usage is the last measurement per target key; a failed one is kept
	// too (ok false), so a scrape does not try a hung mount again.
	usage map[string]measured

	csiDrivers *csiplugin.Registry // NodeGetVolumeStats (csi.go)

	capacity, available, used, inodes, inodesFree, inodesUsed *prometheus.Desc
}

type statsTarget struct {
	namespace, claim, path string
	csi                    *csiStatsSource // nil: not a CSI volume
}

type measured struct {
	u  volumeUsage
	ok bool
}

// key identifies a target across snapshots (csi is a new pointer each time).
func (t statsTarget) key() string { return t.namespace + "/" + t.claim + "\x00" + t.path }

// statsPeriod is how often the usage of the claim volumes is measured
// again (the kubelet's --volume-stats-agg-period, 1m by default).
var statsPeriod = time.Minute

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
		mt.mu.RLock()
		m, seen := mt.usage[t.key()]
		mt.mu.RUnlock()
		if !seen {
			// First scrape of this volume: measured now, kept.
			m.u, m.ok = measure(mt.csiDrivers, t)
			mt.mu.Lock()
			if mt.usage == nil {
				mt.usage = map[string]measured{}
			}
			mt.usage[t.key()] = m
			mt.mu.Unlock()
		}
		if !m.ok {
			continue
		}
		u := m.u
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, t.namespace, t.claim)
		}
		g(mt.capacity, u.capacity)
		g(mt.available, u.available)
		g(mt.used, u.used)
		if u.hasInodes {
			g(mt.inodes, u.inodes)
			g(mt.inodesFree, u.inodesFree)
			g(mt.inodesUsed, u.inodesUsed)
		}
	}
}

// refreshLoop measures every target again each statsPeriod until ctx ends.
func (mt *metrics) refreshLoop(ctx context.Context) {
	t := time.NewTicker(statsPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mt.refresh()
	}
}

// refresh measures the current targets, outside the lock, and replaces
// the cache (volumes gone since drop out; one it cannot measure reports
// nothing until a later refresh can).
func (mt *metrics) refresh() {
	mt.mu.RLock()
	ts := mt.targets
	mt.mu.RUnlock()
	fresh := make(map[string]measured, len(ts))
	for _, t := range ts {
		u, ok := measure(mt.csiDrivers, t)
		fresh[t.key()] = measured{u, ok}
	}
	mt.mu.Lock()
	mt.usage = fresh
	mt.mu.Unlock()
}

// measure is a target's usage: the driver's NodeGetVolumeStats for a CSI
// volume whose driver offers it, else statfs of the volume's path.
func measure(drivers *csiplugin.Registry, t statsTarget) (volumeUsage, bool) {
	if u, ok := csiUsage(drivers, t); ok {
		return u, true
	}
	var s unix.Statfs_t
	if err := unix.Statfs(t.path, &s); err != nil {
		return volumeUsage{}, false
	}
	bs := float64(s.Bsize)
	return volumeUsage{
		capacity: float64(s.Blocks) * bs, available: float64(s.Bavail) * bs, used: float64(s.Blocks-s.Bfree) * bs,
		inodes: float64(s.Files), inodesFree: float64(s.Ffree), inodesUsed: float64(s.Files - s.Ffree), hasInodes: true,
	}, true
}
