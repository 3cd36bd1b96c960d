package main

import (
	"context"
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	criapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/agent/apiobjects"
	"peapod/config"
	"peapod/node"
)

// cluster is what node mode adds: the API client with the node's
// credentials, the Node and its Lease, and the API objects of pods.
type cluster struct {
	client  kubernetes.Interface
	node    *node.Node
	objects *apiobjects.Source
}

func newCluster(_ context.Context, cfg *config.Config, nodeName string, nodeIPs []string, rs criapi.RuntimeService) (*cluster, error) {
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
		Hostname:  nodeName,
		Addresses: nodeIPs,
		MaxPods:   cfg.Agent.MaxPods,
		Runtime:   rs,
		RootDir:   cfg.Root,
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
	return &cluster{client: client, node: n, objects: apiobjects.New(client)}, nil
}
