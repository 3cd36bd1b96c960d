package image

import (
	"fmt"
	"peapod/metrics/shared"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	bytes    prometheus.Counter
	duration prometheus.Histogram
	failures prometheus.Counter
	inFlight prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "peapod_image_pull_bytes_total", Help: "Bytes of image blobs downloaded from registries.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "peapod_image_pull_duration_seconds", Help: "Duration of successful image pulls.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "peapod_image_pull_failures_total", Help: "Image pulls that failed.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "peapod_image_pulls_in_flight", Help: "Image pulls in progress.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.bytes, err = shared.Register(reg, m.bytes)
	if err == nil {
		m.duration, err = shared.Register(reg, m.duration)
	}
	if err == nil {
		m.failures, err = shared.Register(reg, m.failures)
	}
	if err == nil {
		m.inFlight, err = shared.Register(reg, m.inFlight)
	}
	if err != nil {
		return m, fmt.Errorf("image metrics: %w", err)
	}
	return m, nil
}
