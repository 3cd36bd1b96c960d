// Package config holds peapod's configuration: one struct of sub-structs with
// toml tags, every key with an embedded default. The default file that
// `peapod config default` prints is rendered from Default(), so the
// documentation cannot drift from the code.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where serve looks for a config file when --config is not given.
const DefaultPath = "/etc/peapod/peapod.toml"

// Config is the whole of peapod's configuration.
type Config struct {
	// Root holds persistent state: the store, images, pod volumes.
	Root string `toml:"root"`
	// State holds runtime state: conmon pid files, exit files, attach sockets.
	State string `toml:"state"`

	CRI        CRI                `toml:"cri"`
	HTTP       HTTP               `toml:"http"`
	CNI        CNI                `toml:"cni"`
	Image      Image              `toml:"image"`
	Registry   Registry           `toml:"registry"`
	Runtimes   map[string]Runtime `toml:"runtimes"`
	Agent      Agent              `toml:"agent"`
	Containers Containers         `toml:"containers"`
}

// CRI configures the gRPC surface.
type CRI struct {
	Socket         string `toml:"socket"`
	DefaultRuntime string `toml:"default_runtime"`
	// StreamAddress is where Exec/Attach/PortForward URLs are served;
	// port 0 picks an ephemeral port.
	StreamAddress string `toml:"stream_address"`
}

// HTTP configures the metrics / health endpoint.
type HTTP struct {
	Address string `toml:"address"`
	// Pprof mounts net/http/pprof under /debug/pprof/ on this endpoint.
	// Off by default: profiles expose internals to anyone who can connect.
	Pprof bool `toml:"pprof"`
}

// CNI configures pod networking.
type CNI struct {
	ConfDir string   `toml:"conf_dir"`
	BinDirs []string `toml:"bin_dirs"`
	// DefaultConf writes peapod's default conf list (a bridge, host-local
	// IPAM in Subnet, portmap) into conf_dir when it holds none at start.
	// false leaves conf_dir to a cluster network plugin (Flannel, Calico):
	// until its config appears, Status reports NetworkReady=false and
	// RunPodSandbox fails; it is picked up without a restart.
	DefaultConf bool `toml:"default_conf"`
	// Bridge and Subnet shape the default conf list peapod writes when
	// conf_dir holds none.
	Bridge string `toml:"bridge"`
	Subnet string `toml:"subnet"`
}

// Image configures pulls.
type Image struct {
	// StallTimeout cancels a pull that made no real progress for this long.
	StallTimeout Duration `toml:"stall_timeout"`
}

// Registry configures how image references reach registries.
type Registry struct {
	// Mirrors maps an upstream host (docker.io, registry.k8s.io) to the
	// endpoints tried in order instead of it. A mirror list never falls
	// back to the upstream host.
	Mirrors map[string]Mirror `toml:"mirrors"`
	// Insecure lists hosts reached over plain http (loopback hosts always are).
	Insecure []string `toml:"insecure"`
}

// Mirror is one [registry.mirrors."host"] table.
type Mirror struct {
	Endpoints []string `toml:"endpoints"`
}

// Runtime is one OCI runtime handler ([runtimes.runc], [runtimes.crun]).
type Runtime struct {
	Path string `toml:"path"`
	// Root is the runtime's --root state dir; default <state>/<name>.
	Root string `toml:"root"`
	// CreateTimeout bounds a container create (conmon + `runtime create`)
	// whatever the caller's deadline; past it the create is rolled back
	// (conmon and the runtime killed). Default 4m: slow image mounts and a
	// loaded node must not fail a create the kubelet will retry anyway.
	CreateTimeout Duration `toml:"create_timeout"`
}

// Agent configures the kubelet-like half.
type Agent struct {
	// Enabled runs the agent; false leaves a CRI runtime only, for nodes
	// where a kubelet drives peapod (no static pods, no agent memory).
	Enabled      bool   `toml:"enabled"`
	ManifestsDir string `toml:"manifests_dir"`
	// PodLogsDir holds the agent's pod logs:
	// <dir>/<ns>_<name>_<uid>/<container>/<restart>.log, as the kubelet's.
	PodLogsDir string `toml:"pod_logs_dir"`
	// VolumePluginDir holds external FlexVolume drivers in the kubelet's
	// layout, <dir>/<vendor>~<driver>/<driver>.
	VolumePluginDir string `toml:"volume_plugin_dir"`
	// PluginsRegistryDir is watched for CSI drivers' registration sockets
	// (the kubelet's /var/lib/kubelet/plugins_registry); empty:
	// <root>/plugins_registry.
	PluginsRegistryDir string `toml:"plugins_registry_dir"`
	// NodeName is spec.nodeName of the agent's pods and, in node mode, the
	// Node's name; default the hostname.
	NodeName string `toml:"node_name"`
	// Kubeconfig turns on node mode: the agent registers NodeName with
	// this API server, keeps its Lease and runs the pods bound to it
	// (besides the static pods, which it mirrors there). Empty: static
	// pods only.
	Kubeconfig string `toml:"kubeconfig"`
	// NodeIP is the node's InternalIP and the pods' hostIP; default the
	// host's first global unicast address.
	NodeIP string `toml:"node_ip"`
	// MaxPods is the node's pod capacity (the kubelet's maxPods).
	MaxPods int `toml:"max_pods"`
	// ClusterDNS are the nameservers of pods with dnsPolicy ClusterFirst
	// (the kubelet's clusterDNS); empty: such pods get the host's
	// resolv.conf, as the kubelet does.
	ClusterDNS []string `toml:"cluster_dns"`
	// ClusterDomain is the DNS search suffix of ClusterFirst pods.
	ClusterDomain string `toml:"cluster_domain"`
	// Listen is the kubelet API's address in node mode (HTTPS: logs,
	// exec, attach, port-forward, stats, metrics); its port is the Node's
	// daemonEndpoints.kubeletEndpoint.port.
	Listen string `toml:"listen"`
	// TLSCertFile and TLSPrivateKeyFile are the kubelet API's serving
	// certificate; empty: a self-signed one for the node's name and IPs,
	// as the kubelet makes.
	TLSCertFile       string `toml:"tls_cert_file"`
	TLSPrivateKeyFile string `toml:"tls_private_key_file"`
	// ClientCAFile verifies client certificates (the API server's
	// kubelet-client certificate); bearer tokens go to TokenReview.
	ClientCAFile string `toml:"client_ca_file"`

	// The node's resources, with the kubelet's configuration names and
	// defaults (KubeletConfiguration, snake_cased).

	// CgroupRoot is where the QoS tree (kubepods/, burstable/,
	// besteffort/, pod<uid>/) goes, as the kubelet's cgroupRoot.
	CgroupRoot string `toml:"cgroup_root"`
	// CgroupsPerQOS false puts every pod directly under the runtime's own
	// parent, with no QoS tiers and no pod-level limits.
	CgroupsPerQOS bool `toml:"cgroups_per_qos"`
	// EnforceNodeAllocatable: "pods" limits kubepods/ to allocatable.
	EnforceNodeAllocatable []string `toml:"enforce_node_allocatable"`
	// SystemReserved and KubeReserved hold cpu, memory,
	// ephemeral-storage and pid quantities kept away from pods.
	SystemReserved map[string]string `toml:"system_reserved"`
	KubeReserved   map[string]string `toml:"kube_reserved"`
	// PodPidsLimit caps each pod's processes; -1: no limit.
	PodPidsLimit int64 `toml:"pod_pids_limit"`
	// EvictionHard, EvictionSoft, EvictionSoftGracePeriod and
	// EvictionMinimumReclaim map a signal (memory.available,
	// nodefs.available, nodefs.inodesFree, imagefs.available,
	// imagefs.inodesFree, pid.available) to a quantity or a percentage.
	// Keys given here replace the default for that signal only; "0%"
	// turns a signal off.
	EvictionHard            map[string]string `toml:"eviction_hard"`
	EvictionSoft            map[string]string `toml:"eviction_soft"`
	EvictionSoftGracePeriod map[string]string `toml:"eviction_soft_grace_period"`
	EvictionMinimumReclaim  map[string]string `toml:"eviction_minimum_reclaim"`
	// EvictionPressureTransitionPeriod keeps a pressure condition True
	// this long after its signal was last over the threshold.
	EvictionPressureTransitionPeriod Duration `toml:"eviction_pressure_transition_period"`
	// EvictionMaxPodGracePeriod caps the grace period (seconds) of pods
	// evicted for a soft threshold; 0: the pod's own.
	EvictionMaxPodGracePeriod int64 `toml:"eviction_max_pod_grace_period"`
	// EvictionMonitoringPeriod is how often the signals are read
	// (peapod's knob; the kubelet's is its fixed housekeeping interval).
	EvictionMonitoringPeriod Duration `toml:"eviction_monitoring_period"`
	// Image garbage collection: above the high percentage of the image
	// filesystem used, unused images go, least recently used first, until
	// usage is at the low one; none younger than the minimum age; any
	// unused for the maximum age (0: no maximum).
	ImageGCHighThresholdPercent int      `toml:"image_gc_high_threshold_percent"`
	ImageGCLowThresholdPercent  int      `toml:"image_gc_low_threshold_percent"`
	ImageMinimumGCAge           Duration `toml:"image_minimum_gc_age"`
	ImageMaximumGCAge           Duration `toml:"image_maximum_gc_age"`
	// ImageGCPeriod is how often image GC runs (peapod's knob; the
	// kubelet's is a fixed 5m).
	ImageGCPeriod Duration `toml:"image_gc_period"`
	// MaxPerPodContainer dead containers are kept per pod and container
	// name (the kubelet's --maximum-dead-containers-per-container); older
	// ones and their logs are removed. Negative: keep all.
	MaxPerPodContainer int `toml:"max_per_pod_container"`
}

// Containers configures what every container gets beyond its CRI config.
type Containers struct {
	// LXCFS bind-mounts lxcfs's proc/{meminfo,cpuinfo,stat,uptime,loadavg,
	// diskstats,swaps} and sys/devices/system/cpu/online over each
	// container's own, so /proc shows the container's limits: "auto" when
	// lxcfs answers at LXCFSDir, "on" always (CreateContainer fails while
	// lxcfs is down), "off" never. A pod opts out with the annotation
	// peapod.io/lxcfs: "off".
	LXCFS string `toml:"lxcfs"`
	// LXCFSDir is lxcfs's mount point (the argument lxcfs was started with).
	LXCFSDir string `toml:"lxcfs_dir"`
}

// LXCFSModes are the values containers.lxcfs takes.
var LXCFSModes = []string{"auto", "on", "off"}

// ReservedResources are the resource names system_reserved and
// kube_reserved take.
var ReservedResources = []string{"cpu", "memory", "ephemeral-storage", "pid"}

// Duration is a time.Duration that reads and writes as "1m30s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Default returns the embedded defaults.
func Default() *Config {
	return &Config{
		Root:  "/var/lib/peapod",
		State: "/run/peapod",
		CRI: CRI{
			Socket:         "/run/peapod/peapod.sock",
			DefaultRuntime: "runc",
			StreamAddress:  "127.0.0.1:0",
		},
		HTTP: HTTP{Address: "127.0.0.1:9315"},
		CNI: CNI{
			ConfDir:     "/etc/cni/net.d",
			BinDirs:     []string{"/usr/lib/cni", "/opt/cni/bin"},
			DefaultConf: true,
			Bridge:      "cni0",
			Subnet:      "10.88.0.0/16",
		},
		Image: Image{StallTimeout: Duration{time.Minute}},
		Registry: Registry{
			Mirrors:  map[string]Mirror{},
			Insecure: []string{},
		},
		Runtimes: map[string]Runtime{
			"runc": {Path: "/usr/sbin/runc"},
			"crun": {Path: "/usr/bin/crun"},
		},
		Agent: Agent{
			Enabled:         true,
			ManifestsDir:    "/etc/peapod/manifests",
			PodLogsDir:      "/var/log/pods",
			VolumePluginDir: "/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
			MaxPods:         110,
			ClusterDNS:      []string{},
			ClusterDomain:   "cluster.local",
			Listen:          "0.0.0.0:10250",

			CgroupRoot:             "/",
			CgroupsPerQOS:          true,
			EnforceNodeAllocatable: []string{"pods"},
			SystemReserved:         map[string]string{},
			KubeReserved:           map[string]string{},
			PodPidsLimit:           -1,
			EvictionHard: map[string]string{
				"memory.available":   "100Mi",
				"nodefs.available":   "10%",
				"nodefs.inodesFree":  "5%",
				"imagefs.available":  "15%",
				"imagefs.inodesFree": "5%",
			},
			EvictionSoft:                     map[string]string{},
			EvictionSoftGracePeriod:          map[string]string{},
			EvictionMinimumReclaim:           map[string]string{},
			EvictionPressureTransitionPeriod: Duration{5 * time.Minute},
			EvictionMonitoringPeriod:         Duration{10 * time.Second},
			ImageGCHighThresholdPercent:      85,
			ImageGCLowThresholdPercent:       80,
			ImageMinimumGCAge:                Duration{2 * time.Minute},
			ImageGCPeriod:                    Duration{5 * time.Minute},
			MaxPerPodContainer:               1,
		},
		Containers: Containers{LXCFS: "auto", LXCFSDir: "/var/lib/lxcfs"},
	}
}

// Load reads path over the defaults. An unknown key or a bad value is an
// error naming the key. An empty path returns the defaults, or the file at
// DefaultPath when it exists.
func Load(path string) (*Config, error) {
	c := Default()
	if path == "" {
		if _, err := os.Stat(DefaultPath); err != nil {
			return c, c.Validate()
		}
		path = DefaultPath
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := Parse(data, c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// parseErrorText is the error with the offending line quoted, or the plain
// error when the toml library cannot quote it: its ErrorWithPosition
// panics on some inputs (an unterminated string ending in "\r\n", found by
// FuzzParse), and a bad config file must give an error, never a crash.
func parseErrorText(perr toml.ParseError) (text string) {
	defer func() {
		if recover() != nil {
			text = perr.Error()
		}
	}()
	return perr.ErrorWithPosition()
}

// Parse decodes TOML data over c and validates the result.
func Parse(data []byte, c *Config) error {
	md, err := toml.Decode(string(data), c)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return fmt.Errorf("%s", parseErrorText(perr))
		}
		return err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	return c.Validate()
}

// Validate checks values that TOML types alone cannot.
func (c *Config) Validate() error {
	for key, p := range map[string]string{"root": c.Root, "state": c.State, "cri.socket": c.CRI.Socket, "cni.conf_dir": c.CNI.ConfDir, "agent.manifests_dir": c.Agent.ManifestsDir, "agent.pod_logs_dir": c.Agent.PodLogsDir, "agent.volume_plugin_dir": c.Agent.VolumePluginDir, "containers.lxcfs_dir": c.Containers.LXCFSDir} {
		if p == "" || !filepath.IsAbs(p) {
			return fmt.Errorf("%s: %q must be an absolute path", key, p)
		}
	}
	if d := c.Agent.PluginsRegistryDir; d != "" && !filepath.IsAbs(d) {
		return fmt.Errorf("agent.plugins_registry_dir: %q must be an absolute path", d)
	}
	if k := c.Agent.Kubeconfig; k != "" && !filepath.IsAbs(k) {
		return fmt.Errorf("agent.kubeconfig: %q must be an absolute path", k)
	}
	if ip := c.Agent.NodeIP; ip != "" && net.ParseIP(ip) == nil {
		return fmt.Errorf("agent.node_ip: %q is not an IP address", ip)
	}
	if !slices.Contains(LXCFSModes, c.Containers.LXCFS) {
		return fmt.Errorf("containers.lxcfs: %q must be one of %s", c.Containers.LXCFS, strings.Join(LXCFSModes, ", "))
	}
	if c.Agent.MaxPods <= 0 {
		return fmt.Errorf("agent.max_pods: must be positive, got %d", c.Agent.MaxPods)
	}
	for _, ip := range c.Agent.ClusterDNS {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("agent.cluster_dns: %q is not an IP address", ip)
		}
	}
	if _, port, err := net.SplitHostPort(c.Agent.Listen); err != nil || port == "" || port == "0" {
		return fmt.Errorf("agent.listen: %q must be host:port with a fixed port (the Node advertises it)", c.Agent.Listen)
	}
	if (c.Agent.TLSCertFile == "") != (c.Agent.TLSPrivateKeyFile == "") {
		return fmt.Errorf("agent.tls_cert_file and agent.tls_private_key_file: set both or neither")
	}
	for key, p := range map[string]string{"agent.tls_cert_file": c.Agent.TLSCertFile, "agent.tls_private_key_file": c.Agent.TLSPrivateKeyFile, "agent.client_ca_file": c.Agent.ClientCAFile} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("%s: %q must be an absolute path", key, p)
		}
	}
	if d := c.Agent.ClusterDomain; d == "" || strings.ContainsAny(d, " /") {
		return fmt.Errorf("agent.cluster_domain: %q is not a DNS domain", d)
	}
	if err := c.Agent.validateResources(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Address); err != nil {
		return fmt.Errorf("http.address: %w", err)
	}
	if _, _, err := net.SplitHostPort(c.CRI.StreamAddress); err != nil {
		return fmt.Errorf("cri.stream_address: %w", err)
	}
	if _, _, err := net.ParseCIDR(c.CNI.Subnet); err != nil {
		return fmt.Errorf("cni.subnet: %w", err)
	}
	if c.CNI.Bridge == "" || len(c.CNI.Bridge) > 15 {
		return fmt.Errorf("cni.bridge: %q must be 1 to 15 characters", c.CNI.Bridge)
	}
	if len(c.CNI.BinDirs) == 0 {
		return fmt.Errorf("cni.bin_dirs: at least one directory is needed")
	}
	if c.Image.StallTimeout.Duration <= 0 {
		return fmt.Errorf("image.stall_timeout: must be positive, got %s", c.Image.StallTimeout.Duration)
	}
	if _, ok := c.Runtimes[c.CRI.DefaultRuntime]; !ok {
		return fmt.Errorf("cri.default_runtime: %q is not a configured runtime (runtimes.%s)", c.CRI.DefaultRuntime, c.CRI.DefaultRuntime)
	}
	for name, r := range c.Runtimes {
		if r.CreateTimeout.Duration < 0 {
			return fmt.Errorf("runtimes.%s.create_timeout: must not be negative, got %s", name, r.CreateTimeout.Duration)
		}
		if r.Path == "" {
			return fmt.Errorf("runtimes.%s.path: must be set", name)
		}
	}
	for host, m := range c.Registry.Mirrors {
		if len(m.Endpoints) == 0 {
			return fmt.Errorf("registry.mirrors.%q.endpoints: at least one endpoint is needed", host)
		}
		for _, e := range m.Endpoints {
			if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
				return fmt.Errorf("registry.mirrors.%q.endpoints: %q must start with http:// or https://", host, e)
			}
		}
	}
	return nil
}

// PluginsRegistry is the dir the agent watches for CSI driver
// registration sockets.
func (c *Config) PluginsRegistry() string {
	if c.Agent.PluginsRegistryDir != "" {
		return c.Agent.PluginsRegistryDir
	}
	return filepath.Join(c.Root, "plugins_registry")
}

// RuntimeRoot is the --root dir of runtime handler name.
func (c *Config) RuntimeRoot(name string) string {
	if r := c.Runtimes[name]; r.Root != "" {
		return r.Root
	}
	return filepath.Join(c.State, "runtime", name)
}

// Render writes c as a commented TOML file.
func Render(c *Config) ([]byte, error) {
	var body bytes.Buffer
	if err := toml.NewEncoder(&body).Encode(c); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.WriteString(header)
	out.Write(body.Bytes())
	return out.Bytes(), nil
}

const header = `# peapod configuration. Every key below is the embedded default; a file
# only needs the keys it changes. Unknown keys fail start-up.
#
# root      persistent state (store, images, pod volumes)
# state     runtime state (conmon, exit files, attach sockets)
# [cri]     the CRI gRPC socket, default OCI runtime handler, streaming address
# [http]    /metrics, /healthz and /pods; pprof = true adds /debug/pprof/
# [cni]     conf dir (the first valid config in it, by name, is the pods'
#           network; a config added or changed is used from the next pod
#           on), plugin dirs; default_conf = true writes a default conf list
#           (bridge, subnet) when conf_dir holds none at start, false leaves
#           conf_dir to a cluster network plugin such as Flannel
# [image]   stall_timeout cancels a pull with no real progress for that long
# [registry.mirrors."HOST"]  endpoints tried instead of HOST, never falling
#           back to it; loopback registries are plain http without config
# [runtimes.NAME]  OCI runtime handlers (RuntimeHandler in RunPodSandbox):
#           path, root, create_timeout (default 4m, then a create rolls back)
# [agent]   enabled = false runs a CRI runtime only (a kubelet drives it);
#           the static pod manifests dir, pod logs dir, FlexVolume driver
#           dir, CSI plugins_registry_dir (default <root>/plugins_registry)
#           and node name (default: the hostname); node mode
#           (kubeconfig, node_ip, listen, TLS files); the node's resources
#           with the kubelet's names: QoS cgroups under cgroup_root,
#           system_reserved / kube_reserved, eviction_* thresholds, image
#           GC and max_per_pod_container dead containers kept
# [containers]  lxcfs = "auto" | "on" | "off": lxcfs's proc/{meminfo,cpuinfo,
#           stat,uptime,loadavg,diskstats,swaps} and sys/devices/system/cpu/
#           online over every container's own (auto: when lxcfs answers at
#           lxcfs_dir); a pod opts out with annotation peapod.io/lxcfs = "off"

`
