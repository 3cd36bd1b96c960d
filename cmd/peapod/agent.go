package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
	"k8s.io/klog/v2"

	"peapod/agent"
	"peapod/config"
	"peapod/probes"
	"peapod/volumes"
)

// startAgent runs the kubelet-like half. It reaches the runtime only
// through the CRI socket, with the kubelet's own CRI client, exactly as a
// kubelet would; it never reaches into sandbox/. It mounts GET /pods on mux.
func startAgent(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, mux *http.ServeMux) error {
	endpoint := "unix://" + cfg.CRI.Socket
	rs, err := remote.NewRemoteRuntimeService(ctx, endpoint, 2*time.Minute, nil, false)
	if err != nil {
		return fmt.Errorf("agent: CRI runtime client: %w", err)
	}
	is, err := remote.NewRemoteImageService(ctx, endpoint, 2*time.Minute, nil, false)
	if err != nil {
		return fmt.Errorf("agent: CRI image client: %w", err)
	}
	prober := probes.NewManager(probes.Options{Runtime: rs, Registerer: reg})
	vols, err := volumes.New(volumes.Options{
		PodsDir:        filepath.Join(cfg.Root, "pods"),
		PluginDir:      cfg.Agent.VolumePluginDir,
		GlobalMountDir: filepath.Join(cfg.Root, "plugins"),
		StateDir:       filepath.Join(cfg.Root, "volumes"),
		Registerer:     reg,
	})
	if err != nil {
		return fmt.Errorf("agent: volumes: %w", err)
	}
	nodeName := cfg.Agent.NodeName
	if nodeName == "" {
		nodeName, _ = os.Hostname()
	}
	a, err := agent.New(agent.Options{
		ManifestsDir: cfg.Agent.ManifestsDir,
		StateDir:     filepath.Join(cfg.Root, "agent"),
		PodLogsDir:   cfg.Agent.PodLogsDir,
		NodeName:     nodeName,
		Runtime:      rs,
		Images:       is,
		Prober:       prober,
		Volumes:      volumeAdapter{vols},
		Registerer:   reg,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	mux.Handle("GET /pods", a.Handler())
	go vols.Run(ctx)
	go func() {
		if err := a.Run(ctx); err != nil {
			klog.ErrorS(err, "Agent stopped")
		}
		prober.Stop()
	}()
	klog.InfoS("Agent running", "manifests", cfg.Agent.ManifestsDir, "node", nodeName)
	return nil
}

// volumeAdapter passes the agent's objects to volumes/, whose Objects has
// the same fields (volumes/ cannot import agent/, which sits above it).
type volumeAdapter struct{ m *volumes.Manager }

func (v volumeAdapter) SetupPod(ctx context.Context, pod *v1.Pod, objs *agent.Objects) (map[string][]*runtimeapi.Mount, error) {
	return v.m.SetupPod(ctx, pod, (*volumes.Objects)(objs))
}

func (v volumeAdapter) UpdateObjects(objs *agent.Objects) {
	v.m.UpdateObjects((*volumes.Objects)(objs))
}

func (v volumeAdapter) TeardownPod(ctx context.Context, pod *v1.Pod) error {
	return v.m.TeardownPod(ctx, pod)
}
