// Command peapod-agent is peapod's kubelet-like half: static pods from the
// manifests dir, probes, volumes, downward API. It is its own process, as
// the kubelet is beside its runtime, and reaches the runtime only through
// the CRI (--runtime-endpoint: peapod's socket by default, or any CRI
// runtime's). `peapod serve` starts it as a child when agent.enabled is
// set; it also runs by itself.
//
// Its HTTP endpoint is a root-only unix socket (--listen, default
// <state>/agent.sock): GET /pods, GET /metrics (the agent's own series:
// peapod serve merges them into its /metrics), GET /healthz.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
	"k8s.io/klog/v2"

	"peapod/agent"
	"peapod/agent/apiobjects"
	"peapod/config"
	"peapod/internal/unixsock"
	"peapod/kubeletapi/stats"
	"peapod/node"
	"peapod/probes"
	"peapod/volumes"
	"peapod/volumes/csiplugin"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "peapod-agent: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("peapod-agent", flag.ContinueOnError)
	klog.InitFlags(fs)
	path := fs.String("config", "", "config file (default /etc/peapod/peapod.toml when it exists); the agent reads root, state, cri.socket and [agent]")
	root := fs.String("root", "", "override root (the agent keeps its state in <root>/agent, <root>/pods, <root>/volumes)")
	state := fs.String("state", "", "override state (where the default --listen socket goes)")
	endpoint := fs.String("runtime-endpoint", "", "CRI endpoint (default unix://<cri.socket>): peapod's, or any CRI runtime's")
	listen := fs.String("listen", "", "unix socket of the agent's HTTP endpoint (default <state>/agent.sock)")
	kubeconfig := fs.String("kubeconfig", "", "override agent.kubeconfig: join the cluster of this kubeconfig as a node")
	nodeName := fs.String("node-name", "", "override agent.node_name")
	nodeIP := fs.String("node-ip", "", "override agent.node_ip")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if *root != "" {
		cfg.Root = *root
	}
	if *state != "" {
		cfg.State = *state
	}
	if *kubeconfig != "" {
		cfg.Agent.Kubeconfig = *kubeconfig
	}
	if *nodeName != "" {
		cfg.Agent.NodeName = *nodeName
	}
	if *nodeIP != "" {
		cfg.Agent.NodeIP = *nodeIP
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if *endpoint == "" {
		*endpoint = "unix://" + cfg.CRI.Socket
	}
	if !strings.HasPrefix(*endpoint, "unix://") {
		return fmt.Errorf("--runtime-endpoint %q: only unix:// endpoints are supported", *endpoint)
	}
	if *listen == "" {
		*listen = filepath.Join(cfg.State, "agent.sock")
	}
	if os.Geteuid() != 0 {
		return errors.New("peapod-agent must run as root (it mounts volumes and writes pod logs)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, cfg, *endpoint, *listen)
}

// serve runs the agent until ctx ends. Its registry has only the agent's
// own series (no Go or process collectors): peapod serve merges them into
// its /metrics, which has its own.
func serve(ctx context.Context, cfg *config.Config, endpoint, listen string) error {
	reg := prometheus.NewRegistry()
	rs, err := remote.NewRemoteRuntimeService(ctx, endpoint, 2*time.Minute, nil, false)
	if err != nil {
		return fmt.Errorf("CRI runtime client %s: %w", endpoint, err)
	}
	is, err := remote.NewRemoteImageService(ctx, endpoint, 2*time.Minute, nil, false)
	if err != nil {
		return fmt.Errorf("CRI image client %s: %w", endpoint, err)
	}
	runtimeName, err := waitRuntime(ctx, rs, endpoint)
	if err != nil {
		return err
	}
	prober := probes.NewManager(probes.Options{Runtime: rs, Registerer: reg})
	defer prober.Stop()
	nodeName := strings.ToLower(cfg.Agent.NodeName)
	if nodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name: %w", err)
		}
		nodeName = strings.ToLower(h)
	}
	nodeIPs := agent.DetectNodeIPs()
	if cfg.Agent.NodeIP != "" {
		nodeIPs = []string{cfg.Agent.NodeIP}
	}
	res, err := readNodeResources(&cfg.Agent, cfg.Root)
	if err != nil {
		return fmt.Errorf("node resources: %w", err)
	}
	cgroups, err := newPodCgroups(&cfg.Agent, res)
	if err != nil {
		return err
	}
	sopts := stats.Options{NodeName: nodeName, Runtime: rs, Images: is, RootDir: cfg.Root, PodLogsDir: cfg.Agent.PodLogsDir}
	if cgroups != nil {
		// The "pods" system container: allocatableMemory.available.
		sopts.PodsCgroup = cgroups.PodsCgroup()
	}
	st := stats.New(sopts)
	imageGC, err := newImageGC(cfg, rs, is)
	if err != nil {
		return err
	}
	// The eviction manager and the agent refer to each other: it ranks
	// and evicts the agent's pods, the agent asks it about admission.
	var a *agent.Agent
	evictions, thresholds, err := newEviction(cfg, st, imageGC,
		func() []*v1.Pod { return a.ActivePods() },
		func(ctx context.Context, pod *v1.Pod, status v1.PodStatus, grace *int64) error {
			return a.EvictPod(ctx, pod, status, grace)
		})
	if err != nil {
		return err
	}
	reserve := res.allocatableReserve(thresholds)
	var cl *cluster
	var vols *volumes.Manager // the Node reports its volumes in use once it exists
	if cfg.Agent.Kubeconfig != "" {
		cl, err = newCluster(ctx, cfg, nodeName, nodeIPs, rs, reserve, evictions.Pressure, func() ([]v1.UniqueVolumeName, bool) {
			if vols == nil {
				return nil, false
			}
			return vols.VolumesInUse()
		})
		if err != nil {
			return err
		}
	}
	vopts := volumes.Options{
		PodsDir:        filepath.Join(cfg.Root, "pods"),
		PluginDir:      cfg.Agent.VolumePluginDir,
		GlobalMountDir: filepath.Join(cfg.Root, "plugins"),
		StateDir:       filepath.Join(cfg.Root, "volumes"),
		Registerer:     reg,
	}
	if cl != nil {
		vopts.Tokens = cl.objects
		// Attach is the attach/detach controller's: CSI volumes wait for
		// their VolumeAttachment.
		vopts.ControllerAttach, vopts.NodeName = cl.attachments, nodeName
		cl.attachments.Start(ctx.Done())
	}
	// CSI drivers register through sockets in this dir, as with the
	// kubelet's plugin watcher.
	vopts.CSIDrivers = csiplugin.New(cfg.PluginsRegistry())
	if cl != nil {
		// The kubelet's nodeinfomanager: each registered driver in the
		// CSINode and on the Node (node id, topology), for the
		// provisioner, the attacher and the scheduler.
		cl.csiNode = apiobjects.NewCSINodeInfo(cl.client, nodeName, cl.node, csiDriverInfo(vopts.CSIDrivers))
		vopts.CSIDrivers.Subscribe(func(name string, _ bool) { cl.csiNode.Changed(name) })
		go cl.csiNode.Run(ctx)
	}
	go func() {
		if err := vopts.CSIDrivers.Run(ctx); err != nil {
			klog.ErrorS(err, "CSI plugin watcher stopped", "dir", cfg.PluginsRegistry())
		}
	}()
	vols, err = volumes.New(vopts)
	if err != nil {
		return fmt.Errorf("volumes: %w", err)
	}
	aopts := agent.Options{
		ManifestsDir:  cfg.Agent.ManifestsDir,
		StateDir:      filepath.Join(cfg.Root, "agent"),
		PodLogsDir:    cfg.Agent.PodLogsDir,
		NodeName:      nodeName,
		Runtime:       rs,
		Images:        is,
		Prober:        prober,
		Volumes:       vols,
		Registerer:    reg,
		RuntimeName:   runtimeName,
		NodeIP:        firstOf(nodeIPs),
		ClusterDNS:    cfg.Agent.ClusterDNS,
		ClusterDomain: cfg.Agent.ClusterDomain,
	}
	aopts.MaxPerPodContainer = cfg.Agent.MaxPerPodContainer
	// The host ids of pods with `hostUsers: false`, as the kubelet picks
	// them: user "kubelet"'s subordinate ids (getsubids), else every id
	// from 65536 up; enough for max_pods pods.
	ids, err := agent.KubeletIDRange()
	if err != nil {
		return fmt.Errorf("user namespaces: %w", err)
	}
	if err := ids.Check(cfg.Agent.MaxPods); err != nil {
		return err
	}
	aopts.UserNamespaceIDs = &ids
	if cgroups != nil {
		aopts.Cgroups = cgroups
	}
	aopts.NodeAllocatable = node.Allocatable(res.capacity, reserve)
	if cl != nil {
		aopts.Cluster = &agent.ClusterOptions{Client: cl.client, Node: cl.node, Objects: cl.objects, MaxPods: cfg.Agent.MaxPods, Admit: evictions.Admit}
		go func() {
			if err := cl.node.Run(ctx); err != nil {
				klog.ErrorS(err, "Node registration stopped", "node", nodeName)
			}
		}()
	}
	a, err = agent.New(aopts)
	if err != nil {
		return err
	}
	if cl != nil {
		ctx, err = cl.serveKubeletAPI(ctx, cfg, nodeName, nodeIPs, rs, a, st, reg)
		if err != nil {
			return err
		}
	}

	mux := http.NewServeMux()
	mux.Handle("GET /pods", a.Handler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	ln, err := unixsock.Listen(listen, 0o600)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Agent HTTP endpoint stopped", "socket", listen)
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	go vols.Run(ctx)
	go imageGC.Run(ctx)
	go evictions.Run(ctx)
	klog.InfoS("Agent running", "manifests", cfg.Agent.ManifestsDir, "node", nodeName, "runtime", endpoint, "listen", listen, "cluster", cfg.Agent.Kubeconfig != "")
	if err := a.Run(ctx); err != nil {
		return err
	}
	// The kubelet API's failure ends ctx with its cause; a signal ends it
	// with plain cancellation.
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// waitRuntime waits for the runtime to answer Version and returns its
// name: under peapod serve the agent starts while the CRI socket comes up;
// on its own it may start before its runtime.
func waitRuntime(ctx context.Context, rs interface {
	Version(context.Context, string) (*runtimeapi.VersionResponse, error)
}, endpoint string) (string, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := rs.Version(vctx, "v1")
		cancel()
		if err == nil {
			klog.InfoS("CRI runtime answered", "endpoint", endpoint, "runtime", v.GetRuntimeName(), "version", v.GetRuntimeVersion())
			return v.GetRuntimeName(), nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("CRI runtime at %s did not answer within 2m: %w", endpoint, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// csiDriverInfo looks a driver up in the plugin watcher's registry.
func csiDriverInfo(r *csiplugin.Registry) func(string) (apiobjects.CSIDriverInfo, bool) {
	return func(name string) (apiobjects.CSIDriverInfo, bool) {
		d, err := r.Get(name)
		if err != nil {
			return apiobjects.CSIDriverInfo{}, false
		}
		return apiobjects.CSIDriverInfo{NodeID: d.NodeID, MaxVolumes: d.MaxVolumes, Topology: d.Topology}, true
	}
}
