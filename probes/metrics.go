package probes

import (
	"peapod/metrics/shared"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric result label values, as the kubelet's prober_probe_total.
const (
	resultSuccessful = "successful"
	resultFailed     = "failed"
	resultUnknown    = "unknown"
)

// metrics are the prober's collectors. The per-container counter has no pod
// uid label (cardinality); its series are deleted when a container's
// workers are removed for good.
type metrics struct {
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "peapod",
			Subsystem: "prober",
			Name:      "probe_total",
			Help:      "Cumulative number of liveness, readiness and startup probes for a container, by result.",
		}, []string{"probe_type", "result", "container", "pod", "namespace"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "peapod",
			Subsystem: "prober",
			Name:      "probe_duration_seconds",
			Help:      "Duration in seconds of a liveness, readiness or startup probe, by probe type.",
			Buckets:   []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"probe_type"}),
	}
	if reg != nil {
		m.total = shared.MustRegister(reg, m.total)
		m.duration = shared.MustRegister(reg, m.duration)
	}
	return m
}

// workerMetrics holds a worker's series, looked up once so a probe costs no
// label hashing.
type workerMetrics struct {
	successful, failed, unknown prometheus.Counter
	duration                    prometheus.Observer
}

func (m *metrics) forWorker(k Kind, container, pod, namespace string) workerMetrics {
	kind := k.String()
	return workerMetrics{
		successful: m.total.WithLabelValues(kind, resultSuccessful, container, pod, namespace),
		failed:     m.total.WithLabelValues(kind, resultFailed, container, pod, namespace),
		unknown:    m.total.WithLabelValues(kind, resultUnknown, container, pod, namespace),
		duration:   m.duration.WithLabelValues(kind),
	}
}

func (m *metrics) deleteContainer(container, pod, namespace string) {
	for k := Kind(0); k < numKinds; k++ {
		for _, r := range []string{resultSuccessful, resultFailed, resultUnknown} {
			m.total.DeleteLabelValues(k.String(), r, container, pod, namespace)
		}
	}
}
