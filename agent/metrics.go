package agent

import (
	"peapod/metrics/shared"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
)

type metrics struct {
	podStart prometheus.Histogram
	restarts *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		podStart: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "peapod_pod_start_duration_seconds",
			Help:    "Time from the agent's pod worker start to all of the pod's containers running.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 600},
		}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "peapod_container_restarts_total",
			Help: "Container restarts made by the agent.",
		}, []string{"namespace", "pod", "container"}),
	}
	if reg != nil {
		m.podStart = shared.MustRegister(reg, m.podStart)
		m.restarts = shared.MustRegister(reg, m.restarts)
	}
	return m
}

// forgetPod drops the restart series of a removed pod.
func (m *metrics) forgetPod(pod *v1.Pod) {
	for _, c := range allContainers(pod) {
		m.restarts.DeleteLabelValues(pod.Namespace, pod.Name, c.Name)
	}
}
