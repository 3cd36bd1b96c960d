package main

import (
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"peapod/config"
	"peapod/metrics"
	"peapod/sandbox"
)

// registerNodeMetrics adds the node collector (cAdvisor-named container,
// pod and node series from the sandbox manager's one-second stats cache),
// the runtime's pod start histogram and lxcfs's state to reg, and mounts
// /debug/pprof/ on mux when http.pprof is set.
func registerNodeMetrics(cfg *config.Config, reg prometheus.Registerer, mgr *sandbox.Manager, mux *http.ServeMux) {
	reg.MustRegister(metrics.NewNodeCollector(mgr))
	reg.MustRegister(metrics.NewLXCFSCollector(mgr))
	mgr.OnPodStart(metrics.NewPodStart(reg).Observe)
	if cfg.HTTP.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		klog.InfoS("pprof enabled on the HTTP endpoint", "path", "/debug/pprof/")
	}
}
