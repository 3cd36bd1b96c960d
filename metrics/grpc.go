// Package metrics holds peapod's Prometheus collectors and its HTTP
// endpoint (/metrics, /healthz, plus handlers other packages mount).
package metrics

import (
	"context"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// CRICalls records latency and errors of every CRI call by method. One
// interceptor does it for every RPC, instead of a decorator per method.
type CRICalls struct {
	latency *prometheus.HistogramVec
	errors  *prometheus.CounterVec
}

// NewCRICalls registers the CRI call collectors on reg.
func NewCRICalls(reg prometheus.Registerer) *CRICalls {
	c := &CRICalls{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "peapod_cri_request_duration_seconds",
			Help:    "Latency of CRI calls by method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"method"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "peapod_cri_request_errors_total",
			Help: "CRI calls that returned an error, by method and gRPC code.",
		}, []string{"method", "code"}),
	}
	reg.MustRegister(c.latency, c.errors)
	return c
}

// Unary is the gRPC unary interceptor.
func (c *CRICalls) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := path.Base(info.FullMethod)
	start := time.Now()
	resp, err := handler(ctx, req)
	elapsed := time.Since(start)
	c.latency.WithLabelValues(method).Observe(elapsed.Seconds())
	if err != nil {
		code := status.Code(err)
		c.errors.WithLabelValues(method, code.String()).Inc()
		klog.V(2).InfoS("CRI call failed", "method", method, "code", code, "err", err, "duration", elapsed)
	} else {
		klog.V(5).InfoS("CRI call", "method", method, "duration", elapsed)
	}
	return resp, err
}

// Stream is the gRPC stream interceptor.
func (c *CRICalls) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	method := path.Base(info.FullMethod)
	start := time.Now()
	err := handler(srv, ss)
	c.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
	if err != nil {
		c.errors.WithLabelValues(method, status.Code(err).String()).Inc()
	}
	return err
}
