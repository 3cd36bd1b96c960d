package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	criapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/agent/apiobjects"
	"peapod/config"
	"peapod/kubeletapi"
	"peapod/kubeletapi/stats"
	"peapod/node"
)

// cluster is what node mode adds: the API client with the node's
// credentials, the Node and its Lease, and the API objects of pods.
type cluster struct {
	client  kubernetes.Interface
	node    *node.Node
	objects *apiobjects.Source
	// attachments: CSIDrivers and VolumeAttachments for the volume
	// manager, which waits for the controller's attach.
	attachments *apiobjects.Attachments
	// csiNode publishes the registered CSI drivers (CSINode, Node).
	csiNode *apiobjects.CSINodeInfo
}

func newCluster(_ context.Context, cfg *config.Config, nodeName string, nodeIPs []string, rs criapi.RuntimeService, reserved v1.ResourceList,
	pressure func() (bool, bool, bool), volumesInUse func() ([]v1.UniqueVolumeName, bool)) (*cluster, error) {
	_, portStr, err := net.SplitHostPort(cfg.Agent.Listen)
	if err != nil {
		return nil, fmt.Errorf("agent.listen: %w", err)
	}
	port, err := strconv.ParseInt(portStr, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("agent.listen: port %q: %w", portStr, err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Agent.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("agent.kubeconfig %s: %w", cfg.Agent.Kubeconfig, err)
	}
	// The kubelet's defaults (kubeAPIQPS 50, kubeAPIBurst 100): a node
	// starting many pods at once must not queue its status writes.
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "peapod-agent/" + nodeName
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("API client: %w", err)
	}
	n, err := node.New(node.Options{
		Client:   client,
		NodeName: nodeName,
		// The hostname label and address follow the node name, as with
		// the kubelet's --hostname-override: two nodes on one machine
		// must not share kubernetes.io/hostname.
		Hostname:    nodeName,
		Addresses:   nodeIPs,
		KubeletPort: int32(port),
		MaxPods:     cfg.Agent.MaxPods,
		Runtime:     rs,
		RootDir:     cfg.Root,
		Reserved:    reserved,
		Pressure:    pressure,
		// The attach/detach controller does not detach what is listed.
		VolumesInUse: volumesInUse,
		// The kubelet hands the pod CIDR the controller manager allocated
		// to its runtime this way; runtimes that configure CNI from it
		// use it, the others ignore it.
		OnPodCIDR: func(ctx context.Context, cidr string) {
			if err := rs.UpdateRuntimeConfig(ctx, &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: cidr}}); err != nil {
				klog.ErrorS(err, "Passing the pod CIDR to the runtime failed", "podCIDR", cidr)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return &cluster{client: client, node: n, objects: apiobjects.New(client), attachments: apiobjects.NewAttachments(client, n)}, nil
}

// serveKubeletAPI starts the kubelet API (logs, exec, attach,
// port-forward, stats, metrics) on agent.listen. The returned context ends
// when the server fails, so that the agent exits (and is restarted by
// peapod serve) rather than running as a node nobody can reach.
func (c *cluster) serveKubeletAPI(ctx context.Context, cfg *config.Config, nodeName string, nodeIPs []string,
	rs criapi.RuntimeService, pods kubeletapi.PodSource, st *stats.Provider, reg *prometheus.Registry) (context.Context, error) {
	srv, err := kubeletapi.New(kubeletapi.Options{
		Addr:         cfg.Agent.Listen,
		CertFile:     cfg.Agent.TLSCertFile,
		KeyFile:      cfg.Agent.TLSPrivateKeyFile,
		ClientCAFile: cfg.Agent.ClientCAFile,
		Client:       c.client,
		NodeName:     nodeName,
		NodeIPs:      nodeIPs,
		Runtime:      rs,
		Pods:         pods,
		Handlers: map[string]http.Handler{
			"/metrics":          promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
			"/metrics/probes":   promhttp.HandlerFor(onlyFamilies(reg, "peapod_prober_"), promhttp.HandlerOpts{}),
			"/metrics/resource": st.ResourceMetrics(),
			"/metrics/cadvisor": st.CadvisorMetrics(),
			"/stats/summary":    st.Summary(),
		},
	})
	if err != nil {
		return ctx, fmt.Errorf("kubelet API: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		if err := srv.Run(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "The kubelet API stopped; the agent exits", "address", cfg.Agent.Listen)
			cancel(err)
		}
	}()
	return ctx, nil
}

// onlyFamilies gathers the metric families of g whose name has prefix:
// the kubelet's /metrics/probes is its prober series alone.
func onlyFamilies(g prometheus.Gatherer, prefix string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		var out []*dto.MetricFamily
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), prefix) {
				out = append(out, mf)
			}
		}
		return out, err
	})
}
