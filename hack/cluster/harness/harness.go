// Package harness brings up a real Kubernetes control plane on 127.0.0.1
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and one
// node of it: a CRI runtime (peapod, or containerd for reference runs) with
// a node agent on top, which is the upstream kubelet or peapod-agent.
// Everything lives under one directory: certs, kubeconfigs, configs, data,
// logs and cluster.json, which records every PID started, every host change
// made (bridge, cgroup root, sysctls the kubelet rewrites) and the ports, so
// Down can undo exactly that, from another process if need be.
//
// Lifecycle of a cluster (cluster.json's Phase):
//
//	(none) --Up--> starting --all ready--> up --Down--> (dir removed)
//	                   \--any step fails--> Down runs, error returned
//
// The node's address is the gateway address of its own pod bridge, which
// the harness creates before the node agent starts: the kubelet refuses a
// loopback node IP, and an address on peapod's own bridge keeps every packet
// (API server → kubelet, host → pod) on this machine.
//
// Node agent mode (Options.Node "peapod-agent"): no kubelet. peapod runs
// as the CRI runtime exactly as under the kubelet (agent.enabled = false,
// so `peapod serve` starts no agent child), and bin/peapod-agent runs
// beside it as its own component, the node itself: with the kubelet's
// credentials (kubelet.kubeconfig, system:node:<name>) it registers the
// Node, renews its Lease, runs the pods bound to it through the CRI socket
// and mirrors the static pods of its manifests dir. Its config is
// peapod-agent/peapod-agent.toml in the cluster dir (root, state,
// manifests, pod logs and volume plugins all inside the dir). The host
// changes the kubelet makes (its cgroup root, sysctls, /var/lib/kubelet)
// are neither made nor recorded in this mode; Down removes the cgroups of
// the pods it finds in the runtime wherever they are. The controller
// manager's --node-monitor-grace-period is 20s instead of 50s in this mode
// (see startControllers).
//
// Options.MetricsServer adds metrics-server (metricsserver.go) as one more
// host process serving the aggregated metrics.k8s.io API, so that `kubectl
// top` works; the API server always runs with the aggregation (front
// proxy) flags kubeadm gives it.
//
// Options.Hosts makes a multi-node cluster instead (hosts.go): the same
// control plane, and that many test hosts, each a network namespace with
// its own peapod, node agent (peapod-agent or the kubelet) and flanneld.
package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"peapod/internal/freeport"
)

// Options choose what Up builds and where.
type Options struct {
	// Dir holds everything of this cluster; it must not exist yet (or be
	// empty).
	Dir string
	// Repo is peapod's checkout (bin/peapod, hack/ scripts, test images).
	Repo string
	// BinDir holds kube-apiserver, kube-controller-manager, kube-scheduler,
	// kubectl, kubelet and etcd (hack/cluster/build.sh prints it).
	BinDir string
	// Runtime is the node's CRI runtime: "peapod" (default),
	// "containerd" (the current release, the reference; built by
	// hack/cluster/build.sh containerd) or "containerd-debian" (1.6).
	Runtime string
	// Node is the node agent: "kubelet" (default, the upstream kubelet)
	// or "peapod-agent" (bin/peapod-agent in node mode; runtime peapod
	// only). See the package doc.
	Node string
	// NodeName defaults to "peapod-node".
	NodeName string
	// KubeletFeatureGates, KubeletExtraConfig: added to the kubelet's
	// config (gates as "Name=true,Other=false"; extra as YAML lines);
	// kubelet node only.
	KubeletFeatureGates string
	KubeletExtraConfig  string
	// AgentExtraConfig: TOML lines added to peapod-agent's [agent] table
	// (its system_reserved, eviction_* …); peapod-agent node only.
	AgentExtraConfig string
	// E2EImages also pushes the images Kubernetes' node e2e specs pull
	// (agnhost and friends; hack/testimages k8s-e2e-push): the first time
	// it builds agnhost from the cached Kubernetes source (~2 min).
	E2EImages bool
	// MetricsServer is the metrics-server binary (hack/cluster/build.sh
	// metrics-server prints its dir): when set, Up runs it on the node IP
	// behind the APIService v1beta1.metrics.k8s.io and waits until the API
	// server answers for it (metricsserver.go). Empty: no metrics API.
	MetricsServer string
	// CSISidecars holds csi-provisioner, csi-attacher and csi-resizer
	// (hack/cluster/build.sh csi-sidecars prints it): when set, Up runs
	// peapod-csi-loop with them and makes the StorageClass peapod-loop,
	// the default class (csi.go; single node only). Empty: no CSI.
	CSISidecars string
	// Log receives progress lines; nil discards them.
	Log io.Writer

	// Hosts > 0 makes a multi-node cluster (hosts.go): that many test
	// hosts, each a network namespace on a shared "physical" bridge with
	// its own peapod, peapod-agent node (named NodeName-1, NodeName-2 …)
	// and flanneld, instead of the one node on the real host. Node is
	// peapod-agent (the default then) or kubelet (each host's kubelet and
	// peapod in a mount namespace of the host's own), Runtime peapod.
	Hosts int
	// Backend is Flannel's backend with Hosts: "host-gw" (default) or
	// "vxlan".
	Backend string
	// FlannelDir holds bin/flanneld and cni/flannel (hack/cluster/build.sh
	// flannel prints it); required with Hosts.
	FlannelDir string
}

// The node agents Options.Node names.
const (
	NodeKubelet     = "kubelet"
	NodePeapodAgent = "peapod-agent"
)

// Ports of one cluster (all on 127.0.0.1, except the kubelet's and
// metrics-server's on the node IP; KubeletHealthz is 0 with the
// peapod-agent node, MetricsServer 0 without Options.MetricsServer).
type Ports struct {
	Etcd, EtcdPeer, APIServer, ControllerManager, Scheduler int
	Kubelet, KubeletHealthz, Registry, MetricsServer        int
}

// Cluster is a running (or half-made) cluster, as recorded in cluster.json.
type Cluster struct {
	Phase   string `json:"phase"`
	Dir     string `json:"dir"`
	Repo    string `json:"repo"`
	BinDir  string `json:"binDir"`
	Runtime string `json:"runtime"`
	// Node is the node agent, NodeKubelet or NodePeapodAgent ("" in a
	// cluster.json of before: the kubelet).
	Node        string `json:"node"`
	NodeName    string `json:"nodeName"`
	NodeIP      string `json:"nodeIP"`
	Bridge      string `json:"bridge"`
	PodCIDR     string `json:"podCIDR"`
	ClusterCIDR string `json:"clusterCIDR"`
	ServiceCIDR string `json:"serviceCIDR"`
	Ports       Ports  `json:"ports"`
	// Kubeconfig is the admin kubeconfig (system:masters).
	Kubeconfig string `json:"kubeconfig"`
	Kubectl    string `json:"kubectl"`
	// RuntimeEndpoint is the node's CRI socket (unix://…).
	RuntimeEndpoint string `json:"runtimeEndpoint"`
	Registry        string `json:"registry"`
	// CgroupRoot is the node's cgroup root (the kubelet's cgroupRoot,
	// made by the harness in every hierarchy; peapod-agent's
	// agent.cgroup_root, made by the agent); everything of the node's
	// pods sits below it.
	CgroupRoot string `json:"cgroupRoot"`
	// Sysctls the kubelet sets on start, with the values before it ran.
	Sysctls map[string]string `json:"sysctls"`
	// MadeHostDirs are host paths the kubelet uses whatever its root dir
	// (its device-plugin socket dir, /var/log/containers) that did not
	// exist before it started: Down removes them.
	MadeHostDirs []string `json:"madeHostDirs,omitempty"`
	// MadeMountpoints are host dirs made (they did not exist) only as the
	// mount points of the test hosts' private dirs (kubelet hosts): Down
	// removes each when it is empty, never what another put there.
	MadeMountpoints []string `json:"madeMountpoints,omitempty"`
	// ManifestsDir is peapod-agent's static pod dir (peapod-agent node
	// only): a Pod manifest written there runs on the node and shows up
	// in the API server as its mirror pod.
	ManifestsDir string       `json:"manifestsDir,omitempty"`
	Components   []*component `json:"components"`

	// Multi-node clusters only (Options.Hosts, hosts.go); the single-node
	// fields above (NodeName, NodeIP, Bridge, PodCIDR, RuntimeEndpoint,
	// CgroupRoot, ManifestsDir) stay empty there and each Host has its own.
	Backend string `json:"backend,omitempty"`
	// HostNet is the hosts' "physical" /24; ControlPlaneIP the real host's
	// address on it, where tcpforward relays the API server and registry.
	HostNet        string  `json:"hostNet,omitempty"`
	ControlPlaneIP string  `json:"controlPlaneIP,omitempty"`
	SwitchNetns    string  `json:"switchNetns,omitempty"`
	HostLink       string  `json:"hostLink,omitempty"`
	FlannelDir     string  `json:"flannelDir,omitempty"`
	Hosts          []*Host `json:"hosts,omitempty"`
	// MadeNetns and MadeLinks are the network namespaces and root-netns
	// links Up made, recorded as each is made: Down deletes exactly these.
	MadeNetns []string `json:"madeNetns,omitempty"`
	MadeLinks []string `json:"madeLinks,omitempty"`

	opts Options
}

// kubeletSysctls are the kernel settings the kubelet rewrites at start
// (pkg/kubelet/cm setupKernelTunables); Down puts the old values back.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

func (c *Cluster) logf(format string, a ...any) {
	if c.opts.Log != nil {
		fmt.Fprintf(c.opts.Log, "cluster: "+format+"\n", a...)
	}
}

func (c *Cluster) save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.Dir, "cluster.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.Dir, "cluster.json"))
}

// Load reads the cluster recorded in dir.
func Load(dir string) (*Cluster, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		return nil, err
	}
	var c Cluster
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s/cluster.json: %w", dir, err)
	}
	return &c, nil
}

// Up builds the cluster step by step; on any failure it tears down what it
// made and returns the error.
func Up(ctx context.Context, o Options) (c *Cluster, err error) {
	if o.Runtime == "" {
		o.Runtime = "peapod"
	}
	if o.Node == "" {
		o.Node = NodeKubelet
		if o.Hosts > 0 {
			o.Node = NodePeapodAgent
		}
	}
	if o.NodeName == "" {
		o.NodeName = "peapod-node"
	}
	switch o.Node {
	case NodeKubelet:
	case NodePeapodAgent:
		if o.Runtime != "peapod" {
			return nil, fmt.Errorf("harness: node %s runs on runtime peapod only, not %s", o.Node, o.Runtime)
		}
		if o.KubeletFeatureGates != "" || o.KubeletExtraConfig != "" {
			return nil, fmt.Errorf("harness: kubelet feature gates or config with node %s, which has no kubelet", o.Node)
		}
	default:
		return nil, fmt.Errorf("harness: unknown node %q (%s or %s)", o.Node, NodeKubelet, NodePeapodAgent)
	}
	if o.Dir == "" || o.Repo == "" || o.BinDir == "" {
		return nil, errors.New("harness: Dir, Repo and BinDir are required")
	}
	if err := checkMultiNodeOptions(&o); err != nil {
		return nil, err
	}
	if ents, err := os.ReadDir(o.Dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("harness: %s is not empty (a cluster already there? run down first)", o.Dir)
	}
	kubectl := filepath.Join(o.BinDir, "kubectl")
	c = &Cluster{
		Phase: "starting", Dir: o.Dir, Repo: o.Repo, BinDir: o.BinDir, Runtime: o.Runtime, Node: o.Node,
		NodeName: o.NodeName, Kubectl: kubectl, opts: o, Sysctls: map[string]string{},
	}
	dirs := []string{"pki", "logs", "etcd", o.Node, "pod-logs", "volume-plugins", "cni", "runtime"}
	if o.Hosts > 0 {
		dirs = []string{"pki", "logs", "etcd", "hosts", "bin"}
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			c.logf("start failed: %v; tearing down", err)
			if derr := c.Down(); derr != nil {
				c.logf("teardown: %v", derr)
			}
		}
	}()
	if err := c.save(); err != nil {
		return c, err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"addresses and ports", c.pickAddresses},
		{"certificates", c.makePKI},
		{"registry", c.startRegistry},
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"kube-controller-manager and kube-scheduler", c.startControllers},
		{"node network", c.makeNodeNetwork},
		{"runtime " + o.Runtime, c.startRuntime},
		{o.Node, c.startNode},
		{"node Ready", c.waitNodeReady},
		{"default service account", c.waitDefaultServiceAccount},
	}
	if o.Hosts > 0 {
		steps = c.multiNodeSteps()
	}
	steps = append(steps, c.csiSteps()...)
	if o.MetricsServer != "" {
		steps = append(steps, struct {
			name string
			fn   func(context.Context) error
		}{"metrics-server", c.startMetricsServer})
	}
	for _, s := range steps {
		start := time.Now()
		if err := s.fn(ctx); err != nil {
			return c, fmt.Errorf("%s: %w", s.name, err)
		}
		c.logf("%s ready (%.1fs)", s.name, time.Since(start).Seconds())
	}
	c.Phase = "up"
	return c, c.save()
}

func (c *Cluster) pickAddresses(context.Context) error {
	var err error
	p := &c.Ports
	// Kubelet is the kubelet API's port for either node kind.
	ports := []*int{&p.Etcd, &p.EtcdPeer, &p.APIServer, &p.ControllerManager, &p.Scheduler, &p.Registry, &p.Kubelet}
	if c.kubeletNode() {
		ports = append(ports, &p.KubeletHealthz)
	}
	if c.opts.MetricsServer != "" {
		ports = append(ports, &p.MetricsServer)
	}
	for _, port := range ports {
		if *port, err = freeport.Get(); err != nil {
			return err
		}
	}
	// A /24 no route of this host covers: the node's pod CIDR, the gateway
	// (.1) doubling as the node's address. The controller manager's
	// cluster CIDR is the /16 around it, and it hands a node the first free
	// /24 of that, which is this one: the node's spec.podCIDR and the
	// runtime's CNI subnet agree.
	routes, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return fmt.Errorf("ip route: %w", err)
	}
	for i := 0; i < 100 && c.PodCIDR == ""; i++ {
		b := 100 + rand.IntN(150)
		prefix := fmt.Sprintf("10.%d.", b)
		if strings.Contains(string(routes), prefix) {
			continue
		}
		c.ClusterCIDR = prefix + "0.0/16"
		c.PodCIDR = prefix + "0.0/24"
		c.NodeIP = prefix + "0.1"
		c.Bridge = fmt.Sprintf("pk%d", b)
	}
	if c.PodCIDR == "" {
		return errors.New("no free 10.x.0.0/16 for the pod network")
	}
	c.ServiceCIDR = "10.96.0.0/16"
	// The node's cgroup root, its own on this shared machine: the
	// kubelet's is made by the harness, peapod-agent makes its own.
	c.CgroupRoot = "/peapod-cluster-" + c.Bridge
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if c.opts.Hosts > 0 {
		if err := c.pickHosts(string(routes)); err != nil {
			return err
		}
	}
	return c.save()
}

func (c *Cluster) pki(name string) string { return filepath.Join(c.Dir, "pki", name) }

func (c *Cluster) apiURL() string { return fmt.Sprintf("https://127.0.0.1:%d", c.Ports.APIServer) }

// APIServerURL is where the API server listens; CAFile the CA that signed
// its certificate (and every other one of the cluster).
func (c *Cluster) APIServerURL() string { return c.apiURL() }
func (c *Cluster) CAFile() string       { return c.pki("ca.crt") }

// AdminTLS is the admin's (system:masters) client TLS config for the API
// server: the cluster's CA and the admin client certificate.
func (c *Cluster) AdminTLS() (*tls.Config, error) { return c.adminTLS() }

func (c *Cluster) makePKI(context.Context) error {
	dir := filepath.Join(c.Dir, "pki")
	ca, err := newCA(dir, "ca", "peapod-cluster-ca")
	if err != nil {
		return err
	}
	frontProxy, err := newCA(dir, "front-proxy-ca", "peapod-cluster-front-proxy-ca")
	if err != nil {
		return err
	}
	if err := frontProxy.issue(dir, certSpec{name: "front-proxy-client", cn: frontProxyClient, client: true}); err != nil {
		return err
	}
	node := "system:node:" + c.NodeName
	specs := []certSpec{
		{name: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			ips: c.apiServerIPs()},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{name: "admin", cn: "kubernetes-admin", orgs: []string{"system:masters"}, client: true},
		{name: "controller-manager", cn: "system:kube-controller-manager", client: true},
		{name: "scheduler", cn: "system:kube-scheduler", client: true},
	}
	if len(c.Hosts) == 0 {
		// The one node's (each host's are makeHostsPKI's).
		specs = append(specs,
			certSpec{name: "kubelet-client", cn: node, orgs: []string{"system:nodes"}, client: true},
			certSpec{name: "kubelet-serving", cn: c.NodeName, server: true, dns: []string{c.NodeName, "localhost"},
				ips: []net.IP{net.ParseIP(c.NodeIP)}})
	}
	for _, s := range specs {
		if err := ca.issue(dir, s); err != nil {
			return err
		}
	}
	if c.opts.MetricsServer != "" {
		if err := c.makeMetricsServerPKI(ca, dir); err != nil {
			return err
		}
	}
	if len(c.Hosts) > 0 {
		if err := c.makeHostsPKI(ca, dir); err != nil {
			return err
		}
	}
	if err := newServiceAccountKey(dir); err != nil {
		return err
	}
	users := map[string]string{
		"admin": "kubernetes-admin", "controller-manager": "system:kube-controller-manager",
		"scheduler": "system:kube-scheduler", "kubelet": node,
	}
	if len(c.Hosts) > 0 {
		delete(users, "kubelet") // each host has its own (makeHostsPKI)
	}
	for name, user := range users {
		cert := name
		if name == "kubelet" {
			cert = "kubelet-client"
		}
		kc := kubeconfig(c.apiURL(), c.pki("ca.crt"), c.pki(cert+".crt"), c.pki(cert+".key"), user)
		if err := os.WriteFile(filepath.Join(c.Dir, name+".kubeconfig"), []byte(kc), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) startRegistry(ctx context.Context) error {
	c.Registry = fmt.Sprintf("127.0.0.1:%d", c.Ports.Registry)
	if err := c.save(); err != nil {
		return err
	}
	if out, err := c.repoCmd(ctx, "bash", "hack/registry.sh", "start", filepath.Join(c.Dir, "registry"), strconv.Itoa(c.Ports.Registry)).CombinedOutput(); err != nil {
		return fmt.Errorf("hack/registry.sh start: %w: %s", err, out)
	}
	return c.pushImages(ctx)
}

// pushImages pushes, under their original repository paths, the images
// critest and the node's tests pull: the node's runtime mirrors
// registry.k8s.io, gcr.io and docker.io to this registry and nothing else.
func (c *Cluster) pushImages(ctx context.Context) error {
	bin := filepath.Join(c.Dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	for _, b := range []struct{ out, pkg string }{{"ctrbin", "./hack/testimages/ctrbin"}, {"peapod-pause", "./cmd/peapod-pause"}} {
		cmd := c.repoCmd(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(bin, b.out), b.pkg)
		cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w: %s", b.pkg, err, out)
		}
	}
	shell := c.shellBusyboxArgs(ctx)
	out, err := c.repoCmd(ctx, "go", append([]string{"run", "./hack/testimages", "conformance-push", "--registry", c.Registry,
		"--ctrbin", filepath.Join(bin, "ctrbin"), "--pause", filepath.Join(bin, "peapod-pause")}, shell...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("push test images: %w: %s", err, out)
	}
	if !c.opts.E2EImages {
		return nil
	}
	cmd := c.repoCmd(ctx, "go", append([]string{"run", "./hack/testimages", "k8s-e2e-push", "--registry", c.Registry,
		"--ctrbin", filepath.Join(bin, "ctrbin"), "--pause", filepath.Join(bin, "peapod-pause"),
		"--k8s-src", filepath.Join(filepath.Dir(c.BinDir), "src"), "--bin-dir", c.BinDir}, shell...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("push node e2e images: %w: %s", err, out)
	}
	return nil
}

// shellBusyboxArgs returns hack/testimages' --shell-busybox/--shell-libs
// for Debian's dynamic busybox, fetched once with apt into the cache beside
// the Kubernetes binaries. busybox-static's sh runs its own applets for
// every command name (FEATURE_SH_STANDALONE), so `nc` in a spec would never
// reach the image's /usr/bin/nc; the dynamic one's sh looks commands up in
// PATH, as upstream's images do. Without it (no apt): busybox-static, and
// the specs that depend on this fail (logged).
func (c *Cluster) shellBusyboxArgs(ctx context.Context) []string {
	dir := filepath.Join(filepath.Dir(c.BinDir), "busybox-deb")
	bb := filepath.Join(dir, "bin", "busybox")
	if _, err := os.Stat(bb); err != nil {
		tmp, err := os.MkdirTemp(filepath.Dir(c.BinDir), "busybox-deb.")
		if err != nil {
			return nil
		}
		defer os.RemoveAll(tmp)
		script := `set -e; apt-get download busybox >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get download busybox >/dev/null; }; dpkg-deb -x busybox_*.deb x`
		cmd := exec.CommandContext(ctx, "bash", "-c", script)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			c.logf("no Debian busybox package (%v: %s): images keep busybox-static's sh", err, out)
			return nil
		}
		_ = os.RemoveAll(dir)
		if err := os.Rename(filepath.Join(tmp, "x"), dir); err != nil {
			return nil
		}
	}
	out, err := exec.CommandContext(ctx, "ldd", bb).Output()
	if err != nil {
		return nil
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return []string{"--shell-busybox", bb, "--shell-libs", strings.Join(libs, ",")}
}

func (c *Cluster) repoCmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.Repo
	cmd.Env = append(os.Environ(), "PATH=/usr/local/go/bin:"+os.Getenv("PATH"), "GOFLAGS=-buildvcs=false")
	return cmd
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	client := fmt.Sprintf("http://127.0.0.1:%d", c.Ports.Etcd)
	peer := fmt.Sprintf("http://127.0.0.1:%d", c.Ports.EtcdPeer)
	comp, err := c.start("etcd", filepath.Join(c.BinDir, "etcd"), []string{
		"--name=peapod", "--data-dir=" + filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=" + client, "--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=peapod=" + peer, "--log-level=warn",
		// One member on a tmpfs-backed test dir: no need to fsync.
		"--unsafe-no-fsync",
	}, nil)
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, comp, client+"/health", nil, 60*time.Second)
}

func (c *Cluster) adminTLS() (*tls.Config, error) {
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(c.pki("ca.crt"))
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(c.pki("admin.crt"), c.pki("admin.key"))
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}, nil
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	comp, err := c.start("kube-apiserver", filepath.Join(c.BinDir, "kube-apiserver"), []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", c.Ports.Etcd),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", c.Ports.APIServer),
		"--advertise-address=" + c.advertiseAddress(),
		// The kubernetes Service's endpoint would be the advertise address,
		// which only this machine reaches; pods have no route there anyway.
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + c.pki("apiserver.crt"), "--tls-private-key-file=" + c.pki("apiserver.key"),
		"--client-ca-file=" + c.pki("ca.crt"),
		"--kubelet-client-certificate=" + c.pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + c.pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + c.pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-account-key-file=" + c.pki("sa.pub"),
		"--service-account-signing-key-file=" + c.pki("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		// The aggregation layer, with kubeadm's flags: requests for an
		// APIService go to its server with the front-proxy-client
		// certificate and the user in X-Remote-* headers, which that
		// server believes of front-proxy-ca's front-proxy-client only (it
		// reads these settings from the extension-apiserver-authentication
		// ConfigMap the API server publishes).
		"--requestheader-client-ca-file=" + c.pki("front-proxy-ca.crt"),
		"--requestheader-allowed-names=" + frontProxyClient,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + c.pki("front-proxy-client.crt"),
		"--proxy-client-key-file=" + c.pki("front-proxy-client.key"),
		// No kube-proxy routes a Service's ClusterIP here: the aggregator
		// dials an endpoint of the APIService's Service instead.
		"--enable-aggregator-routing=true",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--profiling=false",
		// On SIGTERM, answer new requests 429 (Retry-After: 1) until those
		// in flight are done, then close within 2 s. By default it stops
		// listening at once but waits ShutdownTimeout (the 60 s request
		// timeout) for its open watches, which only end at their own
		// timeout: RestartAPIServer would take a minute.
		"--shutdown-send-retry-after=true",
	}, nil)
	if err != nil {
		return err
	}
	return c.waitAPIServer(ctx, comp)
}

// waitAPIServer waits until kube-apiserver answers /readyz to the admin.
func (c *Cluster) waitAPIServer(ctx context.Context, comp *component) error {
	tlsConf, err := c.adminTLS()
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, comp, c.apiURL()+"/readyz", tlsConf, 120*time.Second)
}

// RestartAPIServer stops kube-apiserver by its recorded PID (SIGTERM: it
// exits within ~2 s, see --shutdown-send-retry-after; SIGKILL if it has
// not 30 s later), starts it again with the arguments it had (same port,
// certificates and etcd, so its clients reconnect to it as to the old one)
// and waits for its /readyz. Every watch of the controller manager, the
// scheduler and the node agent ends meanwhile.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	p := c.component("kube-apiserver")
	if p == nil || !p.alive() {
		return errors.New("kube-apiserver not running")
	}
	const grace = 30 * time.Second
	start := time.Now()
	comp, err := c.stopRestart(p, grace)
	if err != nil {
		return err
	}
	how := "exited"
	if time.Since(start) >= grace {
		how = "killed (SIGKILL)"
	}
	c.logf("kube-apiserver %s %.1fs after SIGTERM, started again as pid %d", how, time.Since(start).Seconds(), comp.PID)
	return c.waitAPIServer(ctx, comp)
}

func (c *Cluster) startControllers(ctx context.Context) error {
	kcm := filepath.Join(c.Dir, "controller-manager.kubeconfig")
	var extra []string
	if !c.kubeletNode() || len(c.Hosts) > 0 {
		// test/cluster's agent node tests (TestAgentNode) kill the agent
		// and wait for the node to go NotReady: with the default 50s grace
		// that wait alone would about double their run (~1 min). 20s
		// still leaves the agent (Lease renewed every 10s) one missed
		// renewal. test/multinode's hosts (either node agent) too: a host
		// whose link is down is NotReady as soon.
		extra = append(extra, "--node-monitor-grace-period=20s")
	}
	if _, err := c.start("kube-controller-manager", filepath.Join(c.BinDir, "kube-controller-manager"), append([]string{
		"--kubeconfig=" + kcm, "--authentication-kubeconfig=" + kcm, "--authorization-kubeconfig=" + kcm,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", c.Ports.ControllerManager),
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + c.pki("sa.key"),
		"--root-ca-file=" + c.pki("ca.crt"),
		"--cluster-signing-cert-file=" + c.pki("ca.crt"), "--cluster-signing-key-file=" + c.pki("ca.key"),
		"--allocate-node-cidrs=true", "--cluster-cidr=" + c.ClusterCIDR, "--node-cidr-mask-size=24",
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--controllers=*,bootstrapsigner,tokencleaner",
		// Its default is /usr/libexec/kubernetes/...: keep it in our dir.
		"--flex-volume-plugin-dir=" + filepath.Join(c.Dir, "volume-plugins"),
		"--profiling=false",
	}, extra...), nil); err != nil {
		return err
	}
	sched := filepath.Join(c.Dir, "scheduler.kubeconfig")
	if _, err := c.start("kube-scheduler", filepath.Join(c.BinDir, "kube-scheduler"), []string{
		"--kubeconfig=" + sched, "--authentication-kubeconfig=" + sched, "--authorization-kubeconfig=" + sched,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", c.Ports.Scheduler),
		"--leader-elect=false", "--profiling=false",
	}, nil); err != nil {
		return err
	}
	// Both answer /healthz on their secure port once serving (anonymous
	// access to /healthz is allowed by their default authorization).
	for _, p := range []struct {
		name string
		port int
	}{{"kube-controller-manager", c.Ports.ControllerManager}, {"kube-scheduler", c.Ports.Scheduler}} {
		if err := c.waitHTTP(ctx, c.component(p.name), fmt.Sprintf("https://127.0.0.1:%d/healthz", p.port),
			&tls.Config{InsecureSkipVerify: true}, 60*time.Second); err != nil { //nolint:gosec // self-signed serving cert of a local component; only its health is read
			return err
		}
	}
	return nil
}

func (c *Cluster) component(name string) *component {
	for _, p := range c.Components {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// waitHTTP polls url until it answers 200, the process dies or the time is up.
func (c *Cluster) waitHTTP(ctx context.Context, comp *component, url string, tlsConf *tls.Config, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	defer client.CloseIdleConnections()
	return pollHTTP(ctx, client, comp, url, timeout)
}

// pollHTTP polls url with client until it answers 200, comp (if any) dies
// or the time is up.
func pollHTTP(ctx context.Context, client *http.Client, comp *component, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if comp != nil && !comp.alive() {
			return fmt.Errorf("%s exited; its log ends:\n%s", comp.Name, tail(comp.Log, 20))
		}
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	name := url
	if comp != nil {
		name = comp.Name + " " + url + "; its log ends:\n" + tail(comp.Log, 20)
	}
	return fmt.Errorf("no answer from %s within %s (last: %s)", name, timeout, last)
}

// Kubectl runs the cluster's kubectl as the admin and returns its stdout.
func (c *Cluster) KubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	return cmd
}

func (c *Cluster) kubectl(ctx context.Context, args ...string) (string, error) {
	return c.KubectlRun(ctx, nil, args...)
}

// KubectlRun runs kubectl as the admin with stdin (nil: none) and returns
// its stdout, or an error naming the command with kubectl's stderr. When
// ctx ends the kill reaches kubectl only: WaitDelay keeps a child of it
// (an exec's remote end) from holding the output pipe for ever.
func (c *Cluster) KubectlRun(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := c.KubectlCmd(ctx, args...)
	cmd.WaitDelay = 5 * time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// waitNodeReady waits until the node (registered by the kubelet or
// peapod-agent) is Ready and has the pod CIDR the runtime's CNI uses.
func (c *Cluster) waitNodeReady(ctx context.Context) error {
	node := c.nodeComponent()
	if node == nil {
		return errors.New("no node agent recorded")
	}
	deadline := time.Now().Add(120 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if !node.alive() {
			return fmt.Errorf("%s exited; its log ends:\n%s", node.Name, tail(node.Log, 30))
		}
		out, err := c.kubectl(ctx, "get", "node", c.NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.spec.podCIDR}`)
		// Ready can come before the controller manager's CIDR allocation.
		if err == nil && strings.HasPrefix(out, "True ") && out != "True " {
			if cidr := strings.TrimPrefix(out, "True "); cidr != c.PodCIDR {
				return fmt.Errorf("node podCIDR %q, but the runtime's CNI subnet is %s", cidr, c.PodCIDR)
			}
			return nil
		}
		last = out
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("node %s not Ready within 120s (last: %s); %s log ends:\n%s", c.NodeName, last, node.Name, tail(node.Log, 30))
}

func (c *Cluster) waitDefaultServiceAccount(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.kubectl(ctx, "-n", "default", "get", "serviceaccount", "default"); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return errors.New("no default service account within 60s (is the controller manager's serviceaccount controller running?)")
}
