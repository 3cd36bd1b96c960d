package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"peapod/sandbox"
)

// LXCFSSource is what the lxcfs collector reads: *sandbox.Manager's last
// check of lxcfs and its counts, all in memory (no syscall on a scrape).
type LXCFSSource interface {
	LXCFSStatus() sandbox.LXCFSStatus
}

// LXCFSCollector exports whether lxcfs answers, how many containers read
// it, and the syncs of running containers' binds after lxcfs died or came
// back. Nothing is exported when containers.lxcfs is off.
type LXCFSCollector struct {
	src                   LXCFSSource
	up, containers, syncs *prometheus.Desc
}

// NewLXCFSCollector builds the collector; register it with reg.MustRegister.
func NewLXCFSCollector(src LXCFSSource) *LXCFSCollector {
	return &LXCFSCollector{
		src: src,
		up: prometheus.NewDesc("peapod_lxcfs_up",
			"1 when lxcfs answers at containers.lxcfs_dir; 0 when it does not, and containers read their own /proc (the host's figures).", []string{"mode"}, nil),
		containers: prometheus.NewDesc("peapod_lxcfs_containers",
			"Live containers that want lxcfs, by whether they read it now (attached) or their own /proc (detached).", []string{"state"}, nil),
		syncs: prometheus.NewDesc("peapod_lxcfs_container_syncs_total",
			"Changes to running containers' lxcfs binds: detach (a dead lxcfs's taken off) and attach (a restarted lxcfs's put in), by result.", []string{"action", "result"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *LXCFSCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.containers
	ch <- c.syncs
}

// Collect implements prometheus.Collector.
func (c *LXCFSCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.LXCFSStatus()
	if st.Mode == "off" {
		return
	}
	up := 0.0
	if st.State.Up {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, st.Mode)
	ch <- prometheus.MustNewConstMetric(c.containers, prometheus.GaugeValue, float64(st.Attached), "attached")
	ch <- prometheus.MustNewConstMetric(c.containers, prometheus.GaugeValue, float64(st.Detached), "detached")
	for _, s := range []struct {
		action, result string
		n              uint64
	}{{"attach", "ok", st.AttachOK}, {"attach", "error", st.AttachErr}, {"detach", "ok", st.DetachOK}, {"detach", "error", st.DetachErr}} {
		ch <- prometheus.MustNewConstMetric(c.syncs, prometheus.CounterValue, float64(s.n), s.action, s.result)
	}
}
