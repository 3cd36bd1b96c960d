package harness

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"peapod/config"

	"sigs.k8s.io/yaml"
)

func testHostsCluster(t *testing.T) *Cluster {
	t.Helper()
	dir := t.TempDir()
	c := &Cluster{Dir: dir, ClusterCIDR: "10.150.0.0/16", Ports: Ports{APIServer: 6443, Registry: 5000},
		opts: Options{Hosts: 2, NodeName: "peapod-node", Backend: BackendVXLAN, FlannelDir: "/cache/flannel"}}
	if err := c.pickHosts(""); err != nil {
		t.Fatal(err)
	}
	return c
}

// Each host has its own addresses, names, dirs, socket, cgroup root and
// kubelet port, on a hosts' net other than the cluster CIDR.
func TestPickHosts(t *testing.T) {
	c := testHostsCluster(t)
	if len(c.Hosts) != 2 || c.Backend != BackendVXLAN || c.NodeIP != "" || c.PodCIDR != "" || c.Bridge != "" {
		t.Fatalf("hosts %d, backend %q, single-node fields %q %q %q", len(c.Hosts), c.Backend, c.NodeIP, c.PodCIDR, c.Bridge)
	}
	if strings.HasPrefix(c.HostNet, "10.150.") || !strings.HasSuffix(c.ControlPlaneIP, ".0.254") {
		t.Errorf("hosts' net %s, control plane %s (cluster CIDR %s)", c.HostNet, c.ControlPlaneIP, c.ClusterCIDR)
	}
	seen := map[string]bool{}
	for i, h := range c.Hosts {
		for _, v := range []string{h.Name, h.Netns, h.IP, h.Dir, h.RuntimeEndpoint, h.CgroupRoot, h.ManifestsDir, h.SubnetFile} {
			if seen[v] {
				t.Errorf("host %s: %q shared with another host", h.ID, v)
			}
			seen[v] = true
		}
		if len(h.Netns) > 15 || len(c.HostLink) > 15 {
			t.Errorf("names too long for links/netns: %q %q", h.Netns, c.HostLink)
		}
		if want := "peapod-node-" + string(rune('1'+i)); h.Name != want {
			t.Errorf("host %d name %q, want %q", i, h.Name, want)
		}
		if _, err := os.Stat(h.ManifestsDir); err != nil {
			t.Error(err)
		}
	}
	if c.Hosts[0].KubeletPort == c.Hosts[1].KubeletPort {
		t.Errorf("both hosts' kubelet API on port %d", c.Hosts[0].KubeletPort)
	}
}

// The configs the harness writes for a host load in peapod and
// peapod-agent (config.Parse refuses unknown keys) with the host's own
// values.
func TestHostConfigs(t *testing.T) {
	c := testHostsCluster(t)
	h := c.Hosts[1]
	cfg := config.Default()
	if err := config.Parse([]byte(c.hostPeapodConfig(h)), cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.CNI.DefaultConf || cfg.CNI.ConfDir != h.cniDir() || cfg.CRI.Socket != strings.TrimPrefix(h.RuntimeEndpoint, "unix://") ||
		cfg.Agent.Enabled || cfg.CNI.BinDirs[0] != "/cache/flannel/cni" {
		t.Errorf("peapod config: %+v %+v agent.enabled=%v", cfg.CNI, cfg.CRI, cfg.Agent.Enabled)
	}
	if eps := cfg.Registry.Mirrors["registry.k8s.io"].Endpoints; len(eps) != 1 || eps[0] != "http://"+c.ControlPlaneIP+":5000" {
		t.Errorf("mirror %v", eps)
	}
	acfg := config.Default()
	if err := config.Parse([]byte(c.hostAgentConfig(h)), acfg); err != nil {
		t.Fatal(err)
	}
	a := acfg.Agent
	if a.NodeName != h.Name || a.NodeIP != h.IP || a.CgroupRoot != h.CgroupRoot || a.ManifestsDir != h.ManifestsDir ||
		a.Kubeconfig != filepath.Join(h.Dir, "kubelet.kubeconfig") || !strings.HasPrefix(a.Listen, h.IP+":") ||
		a.TLSCertFile != c.pki("kubelet-serving-h2.crt") {
		t.Errorf("agent config: %+v", a)
	}
}

// The flannel conflist is what the v0.9.1 plugin reads: CNI 0.3.1, the
// host's own subnet file and data dirs, portmap chained.
func TestFlannelConflist(t *testing.T) {
	c := testHostsCluster(t)
	h := c.Hosts[0]
	var conf struct {
		CNIVersion string           `json:"cniVersion"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(flannelConflist(h)), &conf); err != nil {
		t.Fatal(err)
	}
	if conf.CNIVersion != "0.3.1" || len(conf.Plugins) != 2 || conf.Plugins[0]["type"] != "flannel" || conf.Plugins[1]["type"] != "portmap" {
		t.Fatalf("conflist %+v", conf)
	}
	if conf.Plugins[0]["subnetFile"] != h.SubnetFile || !strings.HasPrefix(conf.Plugins[0]["dataDir"].(string), h.Dir+"/") {
		t.Errorf("flannel plugin %v", conf.Plugins[0])
	}
	var net struct {
		Network string
		Backend struct{ Type string }
	}
	if err := json.Unmarshal([]byte(c.flannelNetConf()), &net); err != nil || net.Network != c.ClusterCIDR || net.Backend.Type != BackendVXLAN {
		t.Errorf("net-conf %+v: %v", net, err)
	}
}

func TestCheckMultiNodeOptions(t *testing.T) {
	fl := t.TempDir()
	for _, f := range []string{"bin/flanneld", "cni/flannel"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(fl, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(fl, f), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ok := Options{Hosts: 2, Node: NodePeapodAgent, Runtime: "peapod", FlannelDir: fl}
	for name, tt := range map[string]struct {
		mod  func(*Options)
		want string // "" = accepted
	}{
		"defaults":       {func(*Options) {}, ""},
		"vxlan":          {func(o *Options) { o.Backend = BackendVXLAN }, ""},
		"single node":    {func(o *Options) { o.Hosts, o.FlannelDir = 0, "" }, ""},
		"backend alone":  {func(o *Options) { o.Hosts, o.Backend = 0, BackendVXLAN }, "Backend without Hosts"},
		"udp":            {func(o *Options) { o.Backend = "udp" }, "unknown Flannel backend"},
		"kubelet":        {func(o *Options) { o.Node = NodeKubelet }, ""},
		"containerd":     {func(o *Options) { o.Runtime = "containerd" }, "runtime peapod"},
		"metrics-server": {func(o *Options) { o.MetricsServer = "/x" }, "metrics-server"},
		"no flannel":     {func(o *Options) { o.FlannelDir = "" }, "FlannelDir"},
		"flannel absent": {func(o *Options) { o.FlannelDir = t.TempDir() }, "build.sh flannel"},
		"too many":       {func(o *Options) { o.Hosts = 10 }, "at most 9"},
	} {
		o := ok
		tt.mod(&o)
		err := checkMultiNodeOptions(&o)
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: %v, want %q", name, err, tt.want)
		}
		if err == nil && o.Hosts > 0 && o.Backend == "" {
			t.Errorf("%s: no default backend", name)
		}
	}
}

// Kubelet hosts: each has its own mount namespace pin, its own dirs for
// the kubelet's fixed host paths, cgroup root and static pod dir; the
// kubelet config the single node's code renders for it says so.
func TestKubeletHosts(t *testing.T) {
	dir := t.TempDir()
	c := &Cluster{Dir: dir, ClusterCIDR: "10.150.0.0/16", Ports: Ports{APIServer: 6443, Registry: 5000},
		opts: Options{Hosts: 2, Node: NodeKubelet, NodeName: "peapod-node", Backend: BackendHostGW, FlannelDir: "/cache/flannel"}}
	if err := c.pickHosts(""); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, h := range c.Hosts {
		if h.agentName() != "kubelet-"+h.ID || !strings.HasPrefix(h.MountNS, dir+"/mntns/") || len(h.HostPaths) != len(kubeletHostDirs) {
			t.Errorf("host %s: agent %q, mount ns %q, host paths %v", h.ID, h.agentName(), h.MountNS, h.HostPaths)
		}
		for _, v := range append([]string{h.MountNS, h.ManifestsDir}, h.HostPaths["/var/lib/kubelet"], h.HostPaths["/var/log/containers"]) {
			if v == "" || seen[v] {
				t.Errorf("host %s: %q empty or shared", h.ID, v)
			}
			seen[v] = true
		}
		if fi, err := os.Stat(h.HostPaths["/var/log/containers"]); err != nil || !fi.IsDir() {
			t.Errorf("host %s: %v", h.ID, err)
		}
	}
	h := c.Hosts[1]
	y := kubeletConfig{address: h.IP, port: h.KubeletPort, healthzAddress: h.IP, healthzPort: 10248,
		cgroupRoot: h.CgroupRoot, staticPods: h.ManifestsDir, runtimeEndpoint: h.RuntimeEndpoint}.render()
	var kc map[string]any
	if err := yaml.Unmarshal([]byte(y), &kc); err != nil {
		t.Fatalf("%v:\n%s", err, y)
	}
	if kc["cgroupRoot"] != h.CgroupRoot || kc["staticPodPath"] != h.ManifestsDir || kc["address"] != h.IP ||
		kc["healthzBindAddress"] != h.IP || kc["cgroupDriver"] != "cgroupfs" || kc["containerRuntimeEndpoint"] != h.RuntimeEndpoint {
		t.Errorf("kubelet config:\n%s", y)
	}
	if _, ok := (kubeletConfig{}).renderMap(t)["staticPodPath"]; ok {
		t.Error("staticPodPath without static pods")
	}
}

func (k kubeletConfig) renderMap(t *testing.T) map[string]any {
	var m map[string]any
	if err := yaml.Unmarshal([]byte(k.render()), &m); err != nil {
		t.Fatal(err)
	}
	return m
}
