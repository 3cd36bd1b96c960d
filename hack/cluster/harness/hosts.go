package harness

// Multi-node clusters (Options.Hosts > 0): test hosts as network
// namespaces, one node each (peapod-agent, or the upstream kubelet),
// joined by Flannel.
//
//	real host (root netns)                    switch netns ppmn<N>-sw
//	┌──────────────────────────────────┐      ┌──────────────────────────────┐
//	│ etcd, kube-apiserver, controller │      │ br0                          │
//	│ manager, scheduler, registry on  │ veth │  ├─ cp ◀───▶ ppmn<N> (root)   │
//	│ 127.0.0.1 (as for one node)      ├──────┤  ├─ h1 ◀───▶ eth0 of host 1   │
//	│ ppmn<N>: 10.N.0.254/24           │      │  └─ h2 ◀───▶ eth0 of host 2   │
//	│ tcpforward 10.N.0.254:{api,reg}  │      └──────────────────────────────┘
//	│   ─▶ 127.0.0.1:{api,reg}         │
//	└──────────────────────────────────┘
//	host i (netns ppmn<N>-hi): lo, eth0 10.N.0.i/24 and no default route;
//	peapod, peapod-agent (node <NodeName>-i, kubelet API on 10.N.0.i) and
//	flanneld started there (nsenter --net: their mounts, cgroups and
//	files are the real host's, so the runtime's and agent's mounts see
//	each other as on one node); cni0 and the pods' veths are made there by
//	the flannel CNI plugin; host-gw routes or flannel.1 (vxlan) by flanneld.
//
// Kubelet hosts (Options.Node "kubelet"): the upstream kubelet is the node
// instead of peapod-agent, and the host's peapod, kubelet and flanneld
// also share a mount namespace of the host's own (nsenter --net --mount;
// pinned at DIR/mntns/h<i>, made by unshare with slave propagation: what
// the real host mounts in its shared mounts, such as /run/netns, reaches
// it; none of its own mounts leave it). Two kubelets on one machine share
// the paths a kubelet uses whatever its --root-dir and podLogsDir
// (kubeletHostDirs: its device-plugin socket dir
// /var/lib/kubelet/device-plugins, which its device manager empties at
// start, and /var/log/containers), so in each host's namespace a dir of
// the host's is bind-mounted over each (Host.HostPaths). The runtime
// shares the namespace because it must see the kubelet's volume mounts
// (tmpfs of secrets, tokens, memory emptyDirs) to bind them into
// containers. Each kubelet has its own cgroupRoot (Host.CgroupRoot, made
// by the harness), so one kubelet's clean-up of orphaned pod cgroups
// (under its cgroupRoot/kubepods) never meets another's pods. The sysctls
// every kubelet rewrites (to the same values) are recorded once and put
// back by Down. Down needs nothing more for the namespace than unmounting
// its pin once the host's processes are gone: every mount in it goes with
// it.
//
// How the hosts reach the control plane: through their own link to the
// real host's address on the "physical" net, 10.N.0.254, where tcpforward
// (hack/cluster/tcpforward, a process started and stopped by PID like
// every other) relays the API server's and the registry's ports to
// 127.0.0.1. The control plane stays exactly as for one node (loopback,
// same flags and kubeconfigs); a host whose link is down is cut off from
// the API server as a real node would be (a forwarder listening inside
// each netns would keep it connected); and kube-apiserver has one
// --bind-address, where 0.0.0.0 would open it on this machine's real
// interfaces too. The API server reaches each host's kubelet API directly
// (10.N.0.i, routed through the real host's veth), as it reaches a node.
// Nothing routes from a host to anywhere else: with no default route, no
// packet of a host or a pod goes further than the real host's end of its
// veth (10.N.0.254, where only tcpforward listens).
//
// Lifecycle, after the control plane of Up: host network → (kubelet hosts:
// their mount namespaces and cgroup roots, above) → tcpforward → each
// host's peapod (CNI conf dir empty, default_conf = false: not
// network-ready) → each host's peapod-agent or kubelet (registers its
// Node; the controller manager gives it a /24 of the cluster CIDR) →
// flanneld per host (kube subnet manager: reads the Node's podCIDR, writes
// subnet.env, annotates the Node, sets NetworkUnavailable=false) → the
// flannel conflist into each host's CNI conf dir once its subnet.env is
// there (what kube-flannel's install-cni does) → peapod turns
// network-ready without a restart → Nodes Ready. Every netns and
// root-netns link is recorded in cluster.json as it is made (MadeNetns,
// MadeLinks) and Down deletes exactly those, after stopping every host
// process by PID and removing every pod through its host's runtime.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Host is one test host of a multi-node cluster.
type Host struct {
	// ID is h1, h2 …: the host's names below (netns, components, dirs).
	ID string `json:"id"`
	// Name is its Node's name.
	Name  string `json:"name"`
	Netns string `json:"netns"`
	// IP is its address on the hosts' net (eth0), the Node's InternalIP
	// and flannel's public IP.
	IP string `json:"ip"`
	// Link is the switch's end of its veth (in the switch netns): down is
	// its cable pulled (SetHostLink).
	Link string `json:"link"`
	Dir  string `json:"dir"`
	// RuntimeEndpoint is its peapod's CRI socket (unix://…).
	RuntimeEndpoint string `json:"runtimeEndpoint"`
	CgroupRoot      string `json:"cgroupRoot"`
	// KubeletPort is its kubelet API's port on IP.
	KubeletPort int `json:"kubeletPort"`
	// PodCIDR is its Node's spec.podCIDR (set once the Node is Ready).
	PodCIDR string `json:"podCIDR"`
	// ManifestsDir is its peapod-agent's static pod dir.
	ManifestsDir string `json:"manifestsDir"`
	// SubnetFile is flanneld's subnet.env for this host.
	SubnetFile string `json:"subnetFile"`
	// Agent is the name of its node agent's component (peapod-agent-h<i>
	// or kubelet-h<i>).
	Agent string `json:"agent,omitempty"`
	// MountNS pins the host's own mount namespace (kubelet hosts; empty:
	// its processes share the real host's mounts). HostPaths maps each
	// path bind-mounted there to the host's dir mounted over it.
	MountNS   string            `json:"mountNS,omitempty"`
	HostPaths map[string]string `json:"hostPaths,omitempty"`
}

// The Flannel backends Options.Backend names.
const (
	BackendHostGW = "host-gw"
	BackendVXLAN  = "vxlan"
)

// flannelUser is flanneld's user (its client certificate's CN), bound to
// kube-flannel's ClusterRole.
const flannelUser = "flannel"

func (h *Host) runtimeName() string { return "peapod-" + h.ID }
func (h *Host) agentName() string {
	if h.Agent != "" {
		return h.Agent
	}
	return NodePeapodAgent + "-" + h.ID
}
func (h *Host) flannelName() string { return "flanneld-" + h.ID }
func (h *Host) agentSocket() string { return filepath.Join(h.Dir, NodePeapodAgent, "agent.sock") }
func (h *Host) cniDir() string      { return filepath.Join(h.Dir, "cni") }

type upStep = struct {
	name string
	fn   func(context.Context) error
}

func checkMultiNodeOptions(o *Options) error {
	if o.Hosts <= 0 {
		if o.Backend != "" {
			return errors.New("harness: Backend without Hosts")
		}
		return nil
	}
	if o.Hosts > 9 {
		return fmt.Errorf("harness: %d hosts; at most 9", o.Hosts)
	}
	if o.Backend == "" {
		o.Backend = BackendHostGW
	}
	switch {
	case o.Backend != BackendHostGW && o.Backend != BackendVXLAN:
		return fmt.Errorf("harness: unknown Flannel backend %q (%s or %s)", o.Backend, BackendHostGW, BackendVXLAN)
	case o.Runtime != "peapod":
		return fmt.Errorf("harness: multi-node clusters run on runtime peapod, not %s", o.Runtime)
	case o.MetricsServer != "":
		return errors.New("harness: no metrics-server in a multi-node cluster")
	case o.FlannelDir == "":
		return errors.New("harness: FlannelDir is required with Hosts (hack/cluster/build.sh flannel prints it)")
	}
	for _, f := range []string{"bin/flanneld", "cni/flannel"} {
		if _, err := os.Stat(filepath.Join(o.FlannelDir, f)); err != nil {
			return fmt.Errorf("harness: %w (bash hack/cluster/build.sh flannel builds it)", err)
		}
	}
	return nil
}

func (c *Cluster) multiNodeSteps() []upStep {
	nodes := upStep{"hosts' peapod-agent nodes", c.startHostAgents}
	steps := []upStep{
		{"addresses and ports", c.pickAddresses},
		{"certificates", c.makePKI},
		{"registry", c.startRegistry},
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"kube-controller-manager and kube-scheduler", c.startControllers},
		{"host network", c.makeHostNetwork},
	}
	if c.opts.Node == NodeKubelet {
		steps = append(steps, upStep{"hosts' mount namespaces and cgroup roots", c.makeHostMounts})
		nodes = upStep{"hosts' kubelets", c.startHostKubelets}
	}
	return append(steps,
		upStep{"tcpforward", c.startForwarder},
		upStep{"hosts' runtimes", c.startHostRuntimes},
		nodes,
		upStep{"flannel " + c.opts.Backend, c.startFlannel},
		upStep{"nodes Ready", c.waitHostsReady},
		upStep{"default service account", c.waitDefaultServiceAccount},
	)
}

// pickHosts picks the hosts' net (a free 10.N.0.0/24 other than the
// cluster CIDR's /16; N names the netns and links too) and lays out each
// host. The single node's fields stay empty.
func (c *Cluster) pickHosts(routes string) error {
	c.Backend, c.FlannelDir = c.opts.Backend, c.opts.FlannelDir
	c.PodCIDR, c.NodeIP, c.Bridge, c.CgroupRoot, c.NodeName = "", "", "", "", ""
	netns, _ := exec.Command("ip", "netns", "list").Output()
	cluster := strings.Split(c.ClusterCIDR, ".")[1]
	n := -1
	for i := 0; i < 100 && n < 0; i++ {
		b := 100 + rand.IntN(150)
		if strconv.Itoa(b) == cluster || strings.Contains(routes, fmt.Sprintf("10.%d.", b)) ||
			strings.Contains(string(netns), fmt.Sprintf("ppmn%d-", b)) {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/sys/class/net/ppmn%d", b)); err == nil {
			continue
		}
		n = b
	}
	if n < 0 {
		return errors.New("no free 10.x.0.0/24 for the hosts' net")
	}
	tag := fmt.Sprintf("ppmn%d", n)
	c.HostNet = fmt.Sprintf("10.%d.0.0/24", n)
	c.ControlPlaneIP = fmt.Sprintf("10.%d.0.254", n)
	c.SwitchNetns = tag + "-sw"
	c.HostLink = tag
	node := c.opts.Node
	if node == "" {
		node = NodePeapodAgent
	}
	for i := 1; i <= c.opts.Hosts; i++ {
		id := fmt.Sprintf("h%d", i)
		dir := filepath.Join(c.Dir, "hosts", id)
		h := &Host{
			ID: id, Name: fmt.Sprintf("%s-%d", c.opts.NodeName, i), Netns: tag + "-" + id,
			IP: fmt.Sprintf("10.%d.0.%d", n, i), Link: id, Dir: dir,
			RuntimeEndpoint: "unix://" + filepath.Join(dir, "runtime", "cri.sock"),
			CgroupRoot:      "/peapod-" + tag + "-" + id,
			KubeletPort:     10249 + i,
			ManifestsDir:    filepath.Join(dir, node, "manifests"),
			SubnetFile:      filepath.Join(dir, "flannel", "subnet.env"),
			Agent:           node + "-" + id,
		}
		dirs := []string{"runtime", "cni", "flannel", "pod-logs", "volume-plugins", filepath.Join(node, "manifests")}
		if node == NodeKubelet {
			h.MountNS = filepath.Join(c.Dir, "mntns", id)
			h.HostPaths = map[string]string{}
			for _, p := range kubeletHostDirs {
				d := filepath.Join(NodeKubelet, strings.ReplaceAll(strings.Trim(p, "/"), "/", "-"))
				h.HostPaths[p] = filepath.Join(dir, d)
				dirs = append(dirs, d)
			}
		}
		for _, d := range dirs {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
				return err
			}
		}
		c.Hosts = append(c.Hosts, h)
	}
	return nil
}

// apiServerIPs are the IP SANs of the API server's certificate: loopback,
// the kubernetes Service's ClusterIP and, with hosts, the address they
// reach it at.
func (c *Cluster) apiServerIPs() []net.IP {
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")}
	if c.ControlPlaneIP != "" {
		ips = append(ips, net.ParseIP(c.ControlPlaneIP))
	}
	return ips
}

// advertiseAddress is the API server's --advertise-address: the node's
// address, or the real host's on the hosts' net.
func (c *Cluster) advertiseAddress() string {
	if c.ControlPlaneIP != "" {
		return c.ControlPlaneIP
	}
	return c.NodeIP
}

// hostsAPIURL is the API server as the hosts reach it (through tcpforward).
func (c *Cluster) hostsAPIURL() string {
	return "https://" + net.JoinHostPort(c.ControlPlaneIP, strconv.Itoa(c.Ports.APIServer))
}

// makeHostsPKI issues each host's node certificates (client as
// system:node:<name>, serving for its IP) and flanneld's client
// certificate, and writes their kubeconfigs, which name the API server
// at the address the hosts reach it at.
func (c *Cluster) makeHostsPKI(ca *certAuthority, dir string) error {
	for _, h := range c.Hosts {
		user := "system:node:" + h.Name
		for _, s := range []certSpec{
			{name: "kubelet-client-" + h.ID, cn: user, orgs: []string{"system:nodes"}, client: true},
			{name: "kubelet-serving-" + h.ID, cn: h.Name, server: true, dns: []string{h.Name}, ips: []net.IP{net.ParseIP(h.IP)}},
		} {
			if err := ca.issue(dir, s); err != nil {
				return err
			}
		}
		kc := kubeconfig(c.hostsAPIURL(), c.pki("ca.crt"), c.pki("kubelet-client-"+h.ID+".crt"), c.pki("kubelet-client-"+h.ID+".key"), user)
		if err := os.WriteFile(filepath.Join(h.Dir, "kubelet.kubeconfig"), []byte(kc), 0o600); err != nil {
			return err
		}
	}
	if err := ca.issue(dir, certSpec{name: "flannel-client", cn: flannelUser, client: true}); err != nil {
		return err
	}
	kc := kubeconfig(c.hostsAPIURL(), c.pki("ca.crt"), c.pki("flannel-client.crt"), c.pki("flannel-client.key"), flannelUser)
	return os.WriteFile(filepath.Join(c.Dir, "flannel.kubeconfig"), []byte(kc), 0o600)
}

func ipRun(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// makeHostNetwork makes the switch (a netns with bridge br0), the real
// host's veth to it (ControlPlaneIP) and each host: a netns with lo, eth0
// on the switch and IP forwarding on (its pods' traffic is routed).
func (c *Cluster) makeHostNetwork(context.Context) error {
	sw := c.SwitchNetns
	addNetns := func(name string) error {
		if err := ipRun("netns", "add", name); err != nil {
			return err
		}
		c.MadeNetns = append(c.MadeNetns, name)
		return c.save()
	}
	if err := addNetns(sw); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-n", sw, "link", "set", "lo", "up"},
		{"-n", sw, "link", "add", "br0", "type", "bridge"},
		{"-n", sw, "link", "set", "br0", "up"},
	} {
		if err := ipRun(args...); err != nil {
			return err
		}
	}
	if err := ipRun("link", "add", c.HostLink, "type", "veth", "peer", "name", "cp", "netns", sw); err != nil {
		return err
	}
	c.MadeLinks = append(c.MadeLinks, c.HostLink)
	if err := c.save(); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-n", sw, "link", "set", "cp", "master", "br0", "up"},
		{"addr", "add", c.ControlPlaneIP + "/24", "dev", c.HostLink},
		{"link", "set", c.HostLink, "up"},
	} {
		if err := ipRun(args...); err != nil {
			return err
		}
	}
	for _, h := range c.Hosts {
		if err := addNetns(h.Netns); err != nil {
			return err
		}
		for _, args := range [][]string{
			{"-n", h.Netns, "link", "set", "lo", "up"},
			{"-n", sw, "link", "add", h.Link, "type", "veth", "peer", "name", "eth0", "netns", h.Netns},
			{"-n", sw, "link", "set", h.Link, "master", "br0", "up"},
			{"-n", h.Netns, "addr", "add", h.IP + "/24", "dev", "eth0"},
			{"-n", h.Netns, "link", "set", "eth0", "up"},
		} {
			if err := ipRun(args...); err != nil {
				return err
			}
		}
		if out, err := exec.Command("ip", "netns", "exec", h.Netns, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
			return fmt.Errorf("%s: ip_forward: %w: %s", h.Netns, err, out)
		}
	}
	return nil
}

// startForwarder builds tcpforward and starts it on the real host's
// address on the hosts' net, relaying the API server and the registry.
func (c *Cluster) startForwarder(ctx context.Context) error {
	bin := filepath.Join(c.Dir, "bin", "tcpforward")
	cmd := c.repoCmd(ctx, "go", "build", "-trimpath", "-o", bin, "./hack/cluster/tcpforward")
	cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./hack/cluster/tcpforward: %w: %s", err, out)
	}
	var args []string
	for _, p := range []int{c.Ports.APIServer, c.Ports.Registry} {
		args = append(args, fmt.Sprintf("%s=127.0.0.1:%d", net.JoinHostPort(c.ControlPlaneIP, strconv.Itoa(p)), p))
	}
	comp, err := c.start("tcpforward", bin, args, nil)
	if err != nil {
		return err
	}
	// The admin's /readyz through the relay: the serving certificate must
	// hold ControlPlaneIP, as the hosts' clients verify it.
	tlsConf, err := c.adminTLS()
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, comp, c.hostsAPIURL()+"/readyz", tlsConf, 30*time.Second)
}

// inHost returns the command line that runs bin with args in host h's
// network namespace and, when it has one, its mount namespace (nsenter
// execs it: the PID started is bin's).
func inHost(h *Host, bin string, args ...string) (string, []string, error) {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return "", nil, fmt.Errorf("nsenter (util-linux): %w", err)
	}
	argv := []string{"--net=/run/netns/" + h.Netns}
	if h.MountNS != "" {
		argv = append(argv, "--mount="+h.MountNS)
	}
	return nsenter, append(append(argv, "--", bin), args...), nil
}

// makeHostMounts prepares the kubelet hosts: the kubelets' cgroup roots,
// the sysctls they rewrite (recorded), and each host's mount namespace
// with its own dirs bind-mounted over kubeletHostDirs. A path missing on
// the real host is made as the mount point and recorded
// (MadeMountpoints).
func (c *Cluster) makeHostMounts(context.Context) error {
	c.recordKubeletSysctls()
	for _, h := range c.Hosts {
		if err := makeCgroupRoot(h.CgroupRoot); err != nil {
			return err
		}
	}
	for _, d := range kubeletHostDirs {
		if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
			c.MadeMountpoints = append(c.MadeMountpoints, d)
			if err := c.save(); err != nil {
				return err
			}
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
	}
	if err := c.save(); err != nil {
		return err
	}
	// A mount namespace is pinned by bind-mounting its nsfs file, which
	// must not lie in a shared mount (the pin would propagate into the
	// namespace itself): the pins live in a private bind mount of their
	// dir (unmountUnder removes both).
	pins := filepath.Join(c.Dir, "mntns")
	if err := os.MkdirAll(pins, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(pins, pins, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s: %w", pins, err)
	}
	if err := syscall.Mount("", pins, "", syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", pins, err)
	}
	for _, h := range c.Hosts {
		if h.MountNS == "" {
			continue
		}
		if err := os.WriteFile(h.MountNS, nil, 0o600); err != nil {
			return err
		}
		if out, err := exec.Command("unshare", "--mount="+h.MountNS, "--propagation", "slave", "true").CombinedOutput(); err != nil {
			return fmt.Errorf("unshare --mount=%s: %w: %s", h.MountNS, err, out)
		}
		for _, p := range kubeletHostDirs {
			if out, err := exec.Command("nsenter", "--mount="+h.MountNS, "--", "mount", "--bind", h.HostPaths[p], p).CombinedOutput(); err != nil {
				return fmt.Errorf("host %s: mount --bind %s %s: %w: %s", h.ID, h.HostPaths[p], p, err, out)
			}
		}
	}
	return nil
}

func (c *Cluster) startInHost(h *Host, name, bin string, args, env []string) (*component, error) {
	path, argv, err := inHost(h, bin, args...)
	if err != nil {
		return nil, err
	}
	return c.start(name, path, argv, env)
}

// hostPeapodConfig is a host's peapod.toml: its own root, state, socket,
// CNI conf dir left to the network plugin (default_conf = false; the
// flannel plugin's dir first in bin_dirs, Debian's plugins after it), and
// the registry mirrors at the relayed registry.
func (c *Cluster) hostPeapodConfig(h *Host) string {
	dir := filepath.Join(h.Dir, "runtime")
	var b strings.Builder
	fmt.Fprintf(&b, "# peapod of host %s (%s) of the cluster in %s (hack/cluster/harness)\n", h.ID, h.Netns, c.Dir)
	fmt.Fprintf(&b, "root = %q\nstate = %q\n", filepath.Join(dir, "root"), filepath.Join(dir, "run"))
	fmt.Fprintf(&b, "[cri]\nsocket = %q\n", strings.TrimPrefix(h.RuntimeEndpoint, "unix://"))
	fmt.Fprintf(&b, "[http]\naddress = \"127.0.0.1:0\"\n")
	fmt.Fprintf(&b, "[cni]\nconf_dir = %q\nbin_dirs = [%q, \"/usr/lib/cni\"]\ndefault_conf = false\n",
		h.cniDir(), filepath.Join(c.FlannelDir, "cni"))
	fmt.Fprintf(&b, "[runtimes.runc]\npath = \"/usr/sbin/runc\"\nroot = %q\n", filepath.Join(dir, "run", "runc"))
	fmt.Fprintf(&b, "[agent]\nenabled = false\n")
	reg := net.JoinHostPort(c.ControlPlaneIP, strconv.Itoa(c.Ports.Registry))
	for _, m := range mirroredHosts {
		fmt.Fprintf(&b, "[registry.mirrors.%q]\nendpoints = [\"http://%s\"]\n", m, reg)
	}
	return b.String()
}

func (c *Cluster) startHostRuntimes(ctx context.Context) error {
	for _, h := range c.Hosts {
		conf := filepath.Join(h.Dir, "runtime", "peapod.toml")
		if err := os.WriteFile(conf, []byte(c.hostPeapodConfig(h)), 0o644); err != nil {
			return err
		}
		comp, err := c.startInHost(h, h.runtimeName(), filepath.Join(c.Repo, "bin", "peapod"), []string{"serve", "--config", conf}, nil)
		if err != nil {
			return err
		}
		if err := waitCRIAt(ctx, comp, h.RuntimeEndpoint); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) hostAgentConfig(h *Host) string {
	return agentConfig{
		cluster: c.Dir, dir: filepath.Join(h.Dir, NodePeapodAgent), runtimeEndpoint: h.RuntimeEndpoint,
		kubeconfig: filepath.Join(h.Dir, "kubelet.kubeconfig"),
		nodeName:   h.Name, nodeIP: h.IP, manifests: h.ManifestsDir,
		podLogs: filepath.Join(h.Dir, "pod-logs"), volumePlugins: filepath.Join(h.Dir, "volume-plugins"),
		cgroupRoot: h.CgroupRoot, extra: c.opts.AgentExtraConfig, port: h.KubeletPort,
		cert: c.pki("kubelet-serving-" + h.ID + ".crt"), key: c.pki("kubelet-serving-" + h.ID + ".key"),
		clientCA: c.pki("ca.crt"),
	}.render()
}

func (c *Cluster) startHostAgents(ctx context.Context) error {
	for _, h := range c.Hosts {
		conf := filepath.Join(h.Dir, NodePeapodAgent, "peapod-agent.toml")
		if err := os.WriteFile(conf, []byte(c.hostAgentConfig(h)), 0o644); err != nil {
			return err
		}
		comp, err := c.startInHost(h, h.agentName(), filepath.Join(c.Repo, "bin", "peapod-agent"), []string{
			"--config", conf, "--runtime-endpoint", h.RuntimeEndpoint, "--listen", h.agentSocket(), "--v=2",
		}, nil)
		if err != nil {
			return err
		}
		if err := waitAgentHealthzAt(ctx, comp, h.agentSocket()); err != nil {
			return err
		}
	}
	return nil
}

// hostKubeletHealthzPort is the kubelets' healthz port, on each host's
// own address.
const hostKubeletHealthzPort = 10248

// startHostKubelets starts each host's kubelet (the single node's config,
// with the host's address, ports, certificates, runtime, cgroup root and
// dirs) in the host's namespaces and waits for their /healthz.
func (c *Cluster) startHostKubelets(ctx context.Context) error {
	comps := map[*Host]*component{}
	for _, h := range c.Hosts {
		args, err := kubeletConfig{
			address: h.IP, port: h.KubeletPort, healthzAddress: h.IP, healthzPort: hostKubeletHealthzPort,
			clientCA: c.pki("ca.crt"), cert: c.pki("kubelet-serving-" + h.ID + ".crt"), key: c.pki("kubelet-serving-" + h.ID + ".key"),
			runtimeEndpoint: h.RuntimeEndpoint, cgroupRoot: h.CgroupRoot,
			podLogs: filepath.Join(h.Dir, "pod-logs"), volumePlugins: filepath.Join(h.Dir, "volume-plugins"),
			staticPods: h.ManifestsDir, featureGates: c.opts.KubeletFeatureGates, extra: c.opts.KubeletExtraConfig,
		}.write(filepath.Join(h.Dir, NodeKubelet), filepath.Join(h.Dir, "kubelet.kubeconfig"), h.Name, h.IP)
		if err != nil {
			return err
		}
		if comps[h], err = c.startInHost(h, h.agentName(), filepath.Join(c.BinDir, "kubelet"), args, nil); err != nil {
			return err
		}
	}
	for _, h := range c.Hosts {
		url := "http://" + net.JoinHostPort(h.IP, strconv.Itoa(hostKubeletHealthzPort)) + "/healthz"
		if err := c.waitHTTP(ctx, comps[h], url, nil, 60*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// flannelRBAC is kube-flannel.yml's ClusterRole, bound to the user of
// flanneld's client certificate instead of its ServiceAccount.
const flannelRBAC = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: flannel}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get]}
- {apiGroups: [""], resources: [nodes], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [nodes/status], verbs: [patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: flannel}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: flannel}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: ` + flannelUser + `}
`

// flannelNetConf is kube-flannel's net-conf.json for the cluster CIDR.
func (c *Cluster) flannelNetConf() string {
	return fmt.Sprintf(`{"Network": %q, "EnableNFTables": false, "Backend": {"Type": %q}}`+"\n", c.ClusterCIDR, c.Backend)
}

// flannelConflist is kube-flannel's cni-conf.json (flannel delegating to
// bridge, then portmap) with the host's own paths for what the plugin
// keeps in /run/flannel and /var/lib/cni by default; cniVersion 0.3.1
// because the v0.9.1 plugin speaks CNI up to 0.4.0 (README.md, Flannel).
func flannelConflist(h *Host) string {
	return fmt.Sprintf(`{"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
  {"type": "flannel", "subnetFile": %q, "dataDir": %q, "ipam": {"dataDir": %q},
   "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
`, h.SubnetFile, filepath.Join(h.Dir, "flannel", "cni"), filepath.Join(h.Dir, "flannel", "ipam"))
}

// startFlannel binds flanneld's RBAC, starts flanneld in every host with
// the kube subnet manager and, as each writes its subnet.env, installs
// the flannel conflist into that host's CNI conf dir.
func (c *Cluster) startFlannel(ctx context.Context) error {
	cmd := c.KubectlCmd(ctx, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(flannelRBAC)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("flannel RBAC: %w: %s", err, out)
	}
	flanneld := filepath.Join(c.FlannelDir, "bin", "flanneld")
	comps := map[*Host]*component{}
	for _, h := range c.Hosts {
		// flanneld exits when its Node has no podCIDR yet (kube-flannel's
		// DaemonSet restarts it until it has): start it once it has one.
		if err := c.waitPodCIDR(ctx, h); err != nil {
			return err
		}
		netConf := filepath.Join(h.Dir, "flannel", "net-conf.json")
		if err := os.WriteFile(netConf, []byte(c.flannelNetConf()), 0o644); err != nil {
			return err
		}
		comp, err := c.startInHost(h, h.flannelName(), flanneld, []string{
			"--kube-subnet-mgr", "--kubeconfig-file=" + filepath.Join(c.Dir, "flannel.kubeconfig"),
			"--net-config-path=" + netConf, "--subnet-file=" + h.SubnetFile,
			"--iface=eth0", "--ip-masq",
		}, []string{"NODE_NAME=" + h.Name})
		if err != nil {
			return err
		}
		comps[h] = comp
	}
	deadline := time.Now().Add(90 * time.Second)
	for _, h := range c.Hosts {
		for {
			if _, err := os.Stat(h.SubnetFile); err == nil {
				break
			}
			if !comps[h].alive() {
				return fmt.Errorf("%s exited; its log ends:\n%s", comps[h].Name, tail(comps[h].Log, 20))
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s wrote no %s within 90s; its log ends:\n%s", comps[h].Name, h.SubnetFile, tail(comps[h].Log, 20))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		// Written whole and renamed into place, as install-cni copies it:
		// peapod never reads half a file.
		tmp := filepath.Join(h.Dir, "flannel", "10-flannel.conflist")
		if err := os.WriteFile(tmp, []byte(flannelConflist(h)), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(h.cniDir(), "10-flannel.conflist")); err != nil {
			return err
		}
	}
	return nil
}

// waitPodCIDR waits until host h's Node exists with a podCIDR.
func (c *Cluster) waitPodCIDR(ctx context.Context, h *Host) error {
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for {
		out, err := c.kubectl(ctx, "get", "node", h.Name, "-o", "jsonpath={.spec.podCIDR}")
		if err == nil && out != "" {
			return nil
		}
		last = out
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s has no podCIDR within 60s (last: %s)", h.Name, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitHostsReady waits until every host's Node is Ready with a podCIDR,
// records it, and checks that flannel's subnet for the host lies in it.
func (c *Cluster) waitHostsReady(ctx context.Context) error {
	deadline := time.Now().Add(120 * time.Second)
	for _, h := range c.Hosts {
		agent := c.component(h.agentName())
		var last string
		for {
			if !agent.alive() {
				return fmt.Errorf("%s exited; its log ends:\n%s", agent.Name, tail(agent.Log, 30))
			}
			out, err := c.kubectl(ctx, "get", "node", h.Name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.spec.podCIDR}`)
			if err == nil && strings.HasPrefix(out, "True ") && out != "True " {
				h.PodCIDR = strings.TrimPrefix(out, "True ")
				break
			}
			last = out
			if err != nil {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %s not Ready within 120s (last: %s); %s log ends:\n%s", h.Name, last, agent.Name, tail(agent.Log, 30))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
		env, err := os.ReadFile(h.SubnetFile)
		if err != nil {
			return err
		}
		_, cidr, err := net.ParseCIDR(h.PodCIDR)
		if err != nil {
			return fmt.Errorf("node %s podCIDR %q: %w", h.Name, h.PodCIDR, err)
		}
		sub := envValue(string(env), "FLANNEL_SUBNET")
		if ip, _, err := net.ParseCIDR(sub); err != nil || !cidr.Contains(ip) {
			return fmt.Errorf("host %s: flannel's subnet %q is not in the Node's podCIDR %s", h.ID, sub, h.PodCIDR)
		}
	}
	return c.save()
}

func envValue(env, key string) string {
	for _, line := range strings.Split(env, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && k == key {
			return v
		}
	}
	return ""
}

// stopHosts stops every host's node agent, removes its pods through its
// runtime, stops the runtimes, flanneld and tcpforward; it returns the
// pod cgroups the runtimes reported (Down removes what is left of them).
func (c *Cluster) stopHosts(note func(error)) []string {
	for _, h := range c.Hosts {
		if p := c.component(h.agentName()); p != nil {
			note(p.stop(30 * time.Second))
		}
	}
	var cgroups []string
	for _, h := range c.Hosts {
		if rt := c.component(h.runtimeName()); rt != nil && rt.alive() {
			cg, err := removeAllPodsAt(context.Background(), h.RuntimeEndpoint)
			note(err)
			cgroups = append(cgroups, cg...)
		}
	}
	for _, h := range c.Hosts {
		for _, name := range []string{h.runtimeName(), h.flannelName()} {
			if p := c.component(name); p != nil {
				note(p.stop(30 * time.Second))
			}
		}
	}
	if p := c.component("tcpforward"); p != nil {
		note(p.stop(10 * time.Second))
	}
	return cgroups
}

// removeHostNetwork deletes the root-netns links and the network
// namespaces Up made (each host's first, the switch last), and with them
// everything inside: veths, cni0, flannel.1, routes, iptables rules.
func (c *Cluster) removeHostNetwork(note func(error)) {
	for _, l := range c.MadeLinks {
		if _, err := os.Stat("/sys/class/net/" + l); err == nil {
			note(ipRun("link", "del", l))
		}
	}
	for i := len(c.MadeNetns) - 1; i >= 0; i-- {
		if _, err := os.Stat("/run/netns/" + c.MadeNetns[i]); err == nil {
			note(ipRun("netns", "del", c.MadeNetns[i]))
		}
	}
}

// HostCmd runs name with args in host h's network namespace (and its
// mount namespace on a kubelet host; files are the real host's), as a
// process of that host.
func (c *Cluster) HostCmd(ctx context.Context, h *Host, name string, args ...string) (*exec.Cmd, error) {
	path, argv, err := inHost(h, name, args...)
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, path, argv...), nil
}

// SetHostLink sets host h's link on the switch down (its cable pulled:
// it reaches neither the other hosts nor the control plane) or up again.
func (c *Cluster) SetHostLink(h *Host, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ipRun("-n", c.SwitchNetns, "link", "set", h.Link, state)
}

// HostProcessesAlive says whether host h's runtime, node agent and
// flanneld all run (for tests that check nothing died).
func (c *Cluster) HostProcessesAlive(h *Host) error {
	var errs []error
	for _, name := range []string{h.runtimeName(), h.agentName(), h.flannelName()} {
		if p := c.component(name); p == nil || !p.alive() {
			errs = append(errs, fmt.Errorf("%s not running", name))
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists what of the cluster is still there after Down: live
// processes it started, its dir, mounts below it, network namespaces and
// links it made, cgroup roots of its node or hosts. Empty: nothing leaked.
func (c *Cluster) Leftovers() []string {
	var left []string
	for _, p := range c.Components {
		if p.alive() {
			left = append(left, fmt.Sprintf("process %s (pid %d)", p.Name, p.PID))
		}
	}
	if _, err := os.Stat(c.Dir); err == nil {
		left = append(left, "dir "+c.Dir)
	}
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[1], c.Dir+"/") {
				left = append(left, "mount "+f[1])
			}
		}
	}
	for _, n := range c.MadeNetns {
		if _, err := os.Stat("/run/netns/" + n); err == nil {
			left = append(left, "netns "+n)
		}
	}
	for _, d := range c.MadeMountpoints {
		// Ours while empty; another's once something else wrote there.
		if ents, err := os.ReadDir(d); err == nil && len(ents) == 0 {
			left = append(left, "dir "+d)
		}
	}
	links := append([]string{}, c.MadeLinks...)
	if c.Bridge != "" {
		links = append(links, c.Bridge)
	}
	for _, l := range links {
		if _, err := os.Stat("/sys/class/net/" + l); err == nil {
			left = append(left, "link "+l)
		}
	}
	roots := []string{}
	if c.CgroupRoot != "" {
		roots = append(roots, c.CgroupRoot)
	}
	for _, h := range c.Hosts {
		roots = append(roots, h.CgroupRoot)
	}
	if hier, err := cgroupHierarchies(); err == nil {
		for _, h := range hier {
			for _, r := range roots {
				if _, err := os.Stat(filepath.Join(h, r)); err == nil {
					left = append(left, "cgroup "+filepath.Join(h, r))
				}
			}
		}
	}
	return left
}

// IPAMDir is where host-local keeps the IPs it gave this host's pods (the
// flannel conflist's ipam.dataDir, network cbr0).
func (h *Host) IPAMDir() string { return filepath.Join(h.Dir, "flannel", "ipam", "cbr0") }

// HostPodSandboxes lists host h's runtime's sandboxes: id by pod UID.
func (c *Cluster) HostPodSandboxes(ctx context.Context, h *Host) (map[string][]string, error) {
	return podSandboxesAt(ctx, h.RuntimeEndpoint)
}

// HostReadyPodSandboxes lists host h's runtime's sandboxes in state
// READY (not stopped): id by pod UID. The kubelet stops a deleted pod's
// sandbox at once but removes it only at its next container GC (each
// minute).
func (c *Cluster) HostReadyPodSandboxes(ctx context.Context, h *Host) (map[string][]string, error) {
	return podSandboxesFiltered(ctx, h.RuntimeEndpoint, &runtimeapi.PodSandboxFilter{
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
	})
}
