// Command cluster brings a real Kubernetes control plane and one node up on
// this machine, and down again (see README.md beside it).
//
//	go run ./hack/cluster up [--dir DIR] [--runtime peapod|containerd|containerd-debian] [--node kubelet|peapod-agent] [--node-name NAME] [--metrics-server] [--csi=false]
//	go run ./hack/cluster up --hosts 2 [--backend host-gw|vxlan] [--node peapod-agent|kubelet] [--dir DIR] [--node-name PREFIX]
//	go run ./hack/cluster down [--dir DIR]
//	go run ./hack/cluster env [--dir DIR]
//	go run ./hack/cluster conformance [--runtime peapod|containerd|containerd-debian] [--node kubelet|peapod-agent] [--focus RE] [--skip RE] [--out DIR] [--procs N] [--storage-testdriver FILE]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"peapod/hack/cluster/harness"
)

const defaultDir = "/run/peapod-cluster"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", defaultDir, "where the cluster's certs, configs, data and logs live")
	runtime := fs.String("runtime", "peapod", "the node's CRI runtime: peapod, containerd (the current release, the reference) or containerd-debian (Debian's 1.6)")
	node := fs.String("node", harness.NodeKubelet, "the node agent: kubelet (the upstream one) or peapod-agent (bin/peapod-agent in node mode, on runtime peapod); with --hosts, peapod-agent unless given")
	nodeName := fs.String("node-name", "peapod-node", "the node's name")
	gates := fs.String("kubelet-feature-gates", "", "extra kubelet feature gates, Name=true,Other=false")
	hosts := fs.Int("hosts", 0, "up: a multi-node cluster of this many test hosts (network namespaces), each a node (--node), joined by Flannel (harness/hosts.go)")
	backend := fs.String("backend", harness.BackendHostGW, "up with --hosts: Flannel's backend, host-gw or vxlan")
	csi := fs.Bool("csi", true, "up (single node): run peapod-csi-loop with csi-provisioner, csi-attacher and csi-resizer (built by hack/cluster/build.sh csi-sidecars) and make the StorageClass peapod-loop, the default class; --csi=false: none")
	metrics := fs.Bool("metrics-server", false, "up: also run metrics-server (built by hack/cluster/build.sh metrics-server) behind the metrics.k8s.io API, for kubectl top")
	focus := fs.String("focus", `\[NodeConformance\]`, "conformance: the specs to run (ginkgo focus)")
	skip := fs.String("skip", `\[Serial\]|\[Disruptive\]|\[Flaky\]|\[Slow\]|\[Feature:|\[Alpha\]`, "conformance: the specs to leave out (ginkgo skip)")
	out := fs.String("out", "", "conformance: keep the report, the e2e log and the cluster's logs here")
	procs := fs.Int("procs", 4, "conformance: parallel ginkgo processes")
	storageDriver := fs.String("storage-testdriver", "", "conformance: an e2e storage test driver file (hack/cluster/csi-loop-testdriver.yaml): the cluster gets CSI and e2e.test that driver's \"External Storage\" specs (select them with --focus)")
	_ = fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "up":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		repo, err := os.Getwd()
		check(err)
		bin, err := build(repo, "control-plane")
		check(err)
		nodeSet := false
		fs.Visit(func(f *flag.Flag) { nodeSet = nodeSet || f.Name == "node" })
		flannel := ""
		if *hosts > 0 {
			if !nodeSet {
				*node = harness.NodePeapodAgent
			}
			flannel, err = build(repo, "flannel")
			check(err)
		} else {
			*backend = ""
		}
		ms := ""
		if *metrics {
			dir, err := build(repo, "metrics-server")
			check(err)
			ms = filepath.Join(dir, "metrics-server")
		}
		csiSidecars := ""
		if *csi && *hosts == 0 {
			csiSidecars, err = build(repo, "csi-sidecars")
			check(err)
		}
		c, err := harness.Up(ctx, harness.Options{
			Dir: *dir, Repo: repo, BinDir: bin, Runtime: *runtime, Node: *node, NodeName: *nodeName,
			KubeletFeatureGates: *gates, MetricsServer: ms, Log: os.Stderr,
			Hosts: *hosts, Backend: *backend, FlannelDir: flannel, CSISidecars: csiSidecars,
		})
		check(err)
		printEnv(c)
	case "down":
		c, err := harness.Load(*dir)
		if os.IsNotExist(err) {
			fmt.Fprintf(os.Stderr, "cluster: no cluster in %s\n", *dir)
			return
		}
		check(err)
		check(c.Down())
		fmt.Fprintf(os.Stderr, "cluster: down, %s removed\n", *dir)
	case "conformance":
		os.Exit(conformance(*runtime, *node, *focus, *skip, *out, *procs, *storageDriver))
	case "env":
		c, err := harness.Load(*dir)
		check(err)
		printEnv(c)
	default:
		usage()
	}
}

// build runs hack/cluster/build.sh TARGET and returns the bin dir it prints.
func build(repo, target string) (string, error) {
	cmd := exec.Command("bash", filepath.Join(repo, "hack/cluster/build.sh"), target)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/cluster/build.sh %s: %w", target, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func printEnv(c *harness.Cluster) {
	fmt.Printf("KUBECONFIG=%s\n", c.Kubeconfig)
	fmt.Printf("KUBECTL=%s\n", c.Kubectl)
	if len(c.Hosts) > 0 {
		fmt.Printf("BACKEND=%s NODE_AGENT=%s HOST_NET=%s CONTROL_PLANE_IP=%s CLUSTER_CIDR=%s\n", c.Backend, c.Node, c.HostNet, c.ControlPlaneIP, c.ClusterCIDR)
		for _, h := range c.Hosts {
			fmt.Printf("HOST=%s NETNS=%s NODE=%s NODE_IP=%s POD_CIDR=%s CONTAINER_RUNTIME_ENDPOINT=%s STATIC_PODS=%s\n",
				h.ID, h.Netns, h.Name, h.IP, h.PodCIDR, h.RuntimeEndpoint, h.ManifestsDir)
		}
		return
	}
	fmt.Printf("CONTAINER_RUNTIME_ENDPOINT=%s\n", c.RuntimeEndpoint)
	fmt.Printf("NODE=%s NODE_IP=%s POD_CIDR=%s\n", c.NodeName, c.NodeIP, c.PodCIDR)
	node := c.Node
	if node == "" {
		node = harness.NodeKubelet
	}
	fmt.Printf("NODE_AGENT=%s\n", node)
	if c.ManifestsDir != "" {
		fmt.Printf("STATIC_PODS=%s\n", c.ManifestsDir)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: go run ./hack/cluster up|down|env [--dir DIR] [--runtime peapod|containerd|containerd-debian] [--node kubelet|peapod-agent] [--node-name NAME] [--metrics-server] [--hosts N [--backend host-gw|vxlan]]")
	os.Exit(2)
}
