package image

import (
	"errors"
	"fmt"

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
	m.bytes, err = register(reg, m.bytes)
	if err == nil {
		m.duration, err = register(reg, m.duration)
	}
	if err == nil {
		m.failures, err = register(reg, m.failures)
	}
	if err == nil {
		m.inFlight, err = register(reg, m.inFlight)
	}
	return m, err
}

// register registers c, or reuses the collector already registered under
// the same name (a second Service on one registry, as in tests).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old, nil
			}
		}
		return c, fmt.Errorf("image metrics: %w", err)
	}
	return c, nil
}
