package agent

import (
	"errors"

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
		m.podStart = register(reg, m.podStart)
		m.restarts = register(reg, m.restarts)
	}
	return m
}

// register registers c, or returns the collector already registered under
// the same name (a second Agent on the same registry, in tests).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

// forgetPod drops the restart series of a removed pod.
func (m *metrics) forgetPod(pod *v1.Pod) {
	for _, c := range allContainers(pod) {
		m.restarts.DeleteLabelValues(pod.Namespace, pod.Name, c.Name)
	}
}
