// Package network gives a pod sandbox its network: a network namespace
// pinned by a bind mount, and CNI ADD / CHECK / DEL of one network
// configuration list through libcni.
//
// A pod's network, as this package sees it:
//
//	            NewNetNS               Setup (lo up + CNI ADD)
//	(nothing) ───────────▶ netns pinned ─────────────────────▶ attached
//	    ▲                     │   ▲        ADD failed: DEL run     │
//	    │      RemoveNetNS    │   └────────────────────────────────┤
//	    └─────────────────────┘      Teardown (CNI DEL)            │
//	                              ◀────────────────────────────────┘
//
// Teardown is idempotent and runs with the netns path missing or broken, so
// the IP address is freed whatever order the caller unwinds in; Setup undoes
// its own partial ADD. The caller (sandbox/) serialises operations on one pod.
//
// The network is the operator's: the first valid config in the conf dir,
// re-read whenever the dir changes (conf.go), so Setup of the next pod uses a
// config installed or changed while peapod runs. Teardown and Check use the
// config the pod's ADD used, from libcni's cache, whatever the dir holds now.
package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"k8s.io/klog/v2"
)

// Defaults for the zero fields of Options.
const (
	DefaultConfDir     = "/etc/cni/net.d"
	DefaultCacheDir    = "/var/lib/peapod/cni-cache"
	DefaultNetNSDir    = "/run/netns"
	DefaultBridge      = "cni0"
	DefaultSubnet      = "10.88.0.0/16"
	DefaultNetworkName = "peapod"

	// DefaultConfFile is the name of the conflist New writes into an empty
	// conf dir.
	DefaultConfFile = "10-peapod.conflist"

	// IfName is the pod's interface name.
	IfName = "eth0"

	// undoTimeout bounds the DEL that Setup runs after a failed ADD; it runs
	// even when the caller's context is already cancelled.
	undoTimeout = time.Minute
)

// DefaultBinDirs are searched for CNI plugins, in order.
var DefaultBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// Options configures a Manager. Zero fields take the defaults above.
type Options struct {
	ConfDir  string   // CNI network configs (*.conflist, *.conf, *.json)
	BinDirs  []string // CNI plugin binaries, searched in order
	CacheDir string   // libcni's result cache, peapod's own so it never mixes with other runtimes
	NetNSDir string   // where network namespaces are pinned

	// NoDefaultConf leaves an empty ConfDir empty: a cluster network
	// plugin (Flannel, Calico) installs its config there, and until it does
	// Ready reports the network not ready and Setup fails.
	NoDefaultConf bool

	// The next fields shape the default conflist only, written when ConfDir
	// holds none (and NoDefaultConf is false); they change nothing once a
	// config exists.
	Bridge      string // bridge device name
	Subnet      string // host-local IPAM range
	NetworkName string // CNI network name
	IPAMDataDir string // host-local "dataDir"; "" leaves host-local's default (/var/lib/cni/networks)
}

func (o Options) withDefaults() Options {
	if o.ConfDir == "" {
		o.ConfDir = DefaultConfDir
	}
	if len(o.BinDirs) == 0 {
		o.BinDirs = slices.Clone(DefaultBinDirs)
	}
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir
	}
	if o.NetNSDir == "" {
		o.NetNSDir = DefaultNetNSDir
	}
	if o.Bridge == "" {
		o.Bridge = DefaultBridge
	}
	if o.Subnet == "" {
		o.Subnet = DefaultSubnet
	}
	if o.NetworkName == "" {
		o.NetworkName = DefaultNetworkName
	}
	return o
}

// Manager runs CNI for pods and pins their network namespaces. It is safe for
// concurrent use by different pods.
type Manager struct {
	opts Options
	cni  *libcni.CNIConfig
	exec invoke.Exec

	mu   sync.Mutex
	conf confCache
}

// New returns a Manager. When opts.ConfDir holds no network config, New
// writes peapod's default conflist there (atomically) unless
// opts.NoDefaultConf; an existing config is never touched. A missing config
// or plugin is not an error here: Ready reports it.
func New(opts Options) (*Manager, error) {
	opts = opts.withDefaults()
	if len(opts.Bridge) > 15 {
		return nil, fmt.Errorf("bridge name %q longer than 15 characters", opts.Bridge)
	}
	if _, _, err := net.ParseCIDR(opts.Subnet); err != nil {
		return nil, fmt.Errorf("default CNI subnet: %w", err)
	}
	if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("CNI cache dir: %w", err)
	}
	if !opts.NoDefaultConf {
		if err := writeDefaultConfIfEmpty(opts); err != nil {
			return nil, err
		}
	}
	exec := &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: os.Stderr},
		PluginDecoder: version.PluginDecoder{},
	}
	return &Manager{
		opts: opts,
		cni:  libcni.NewCNIConfigWithCacheDir(opts.BinDirs, opts.CacheDir, exec),
		exec: exec,
	}, nil
}

// Options returns the options in effect, defaults filled in.
func (m *Manager) Options() Options { return m.opts }

// NetNSPath is where NewNetNS pins the namespace called name.
func (m *Manager) NetNSPath(name string) string { return filepath.Join(m.opts.NetNSDir, name) }

// PortMapping is one hostPort mapping, handed to plugins with the
// "portMappings" capability (portmap).
type PortMapping struct {
	HostPort      int32
	ContainerPort int32
	Protocol      string // "tcp", "udp" or "sctp"; "" is tcp
	HostIP        string // "" is every host address
}

// Bandwidth limits, in bits per second and bits, handed to plugins with the
// "bandwidth" capability. Zero means no limit in that direction.
type Bandwidth struct {
	IngressRate, IngressBurst uint64
	EgressRate, EgressBurst   uint64
}

// Pod is what CNI needs to know about a pod sandbox.
type Pod struct {
	ID        string // sandbox id: the CNI container id
	Name      string
	Namespace string
	UID       string

	NetNS        string // pinned netns path; on Teardown it may be "" or gone
	PortMappings []PortMapping
	CgroupParent string
	Bandwidth    *Bandwidth
}

// Interface is one interface in a CNI result.
type Interface struct {
	Name    string
	MAC     string
	Sandbox string // netns path; "" for a host-side interface
}

// Result is the outcome of Setup.
type Result struct {
	Network    string   // CNI network name
	IPs        []net.IP // IPv4 first
	Interfaces []Interface
	Raw        types.Result // as the plugins returned it
}

// Setup brings lo up in p.NetNS and runs CNI ADD of the network. When ADD
// fails it runs DEL before returning, so no IP or veth is left behind.
func (m *Manager) Setup(ctx context.Context, p Pod) (*Result, error) {
	if p.NetNS == "" {
		return nil, fmt.Errorf("setting up network of pod %s: no netns path", p)
	}
	list, err := m.networkList()
	if err != nil {
		return nil, fmt.Errorf("network not ready: %w", err)
	}
	if err := loopbackUp(p.NetNS); err != nil {
		return nil, fmt.Errorf("setting up network of pod %s: %w", p, err)
	}
	rt := m.runtimeConf(p, p.NetNS)
	raw, err := m.cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		err = fmt.Errorf("CNI ADD of network %q for pod %s: %w", list.Name, p, err)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		if derr := m.cni.DelNetworkList(dctx, list, rt); derr != nil {
			err = errors.Join(err, fmt.Errorf("undoing it with CNI DEL: %w", derr))
		}
		return nil, err
	}
	res, err := parseResult(list.Name, raw)
	if err != nil {
		// The plugins did attach the pod; take it back down.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		if derr := m.cni.DelNetworkList(dctx, list, rt); derr != nil {
			err = errors.Join(err, fmt.Errorf("undoing it with CNI DEL: %w", derr))
		}
		return nil, fmt.Errorf("CNI ADD of network %q for pod %s: %w", list.Name, p, err)
	}
	return res, nil
}

// Teardown runs CNI DEL of the network for p. It is idempotent. When p.NetNS
// is "", missing, or not a network namespace any more, DEL still runs, with
// an empty netns, which the plugins take as "the interface is gone already":
// bridge and host-local still free the IP address, portmap its rules.
//
// DEL runs with the config and arguments of p's ADD (libcni's cache), so a
// pod outlives a change of the operator's config: its address goes back to
// the range and bridge it came from. With nothing cached (a second DEL, or
// peapod stopped mid-ADD) the current config is used; with neither there is
// nothing to undo.
func (m *Manager) Teardown(ctx context.Context, p Pod) error {
	nsPath := p.NetNS
	if nsPath != "" {
		if ok, err := IsNetNS(nsPath); !ok {
			// bridge fails DEL on a path that exists but is no netns
			// (an unmounted pin); a missing path it handles, "" too.
			klog.V(2).InfoS("netns gone, CNI DEL without it", "pod", p.String(), "netns", nsPath, "reason", err)
			nsPath = ""
		}
	}
	list, rt := m.addedConf(p, nsPath)
	if list == nil {
		var err error
		if list, err = m.networkList(); err != nil {
			klog.InfoS("No CNI ADD cached and no network config: nothing to tear down", "pod", p.String(), "reason", err)
			return nil
		}
		rt = m.runtimeConf(p, nsPath)
	}
	if err := m.cni.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("CNI DEL of network %q for pod %s: %w", list.Name, p, err)
	}
	return nil
}

// Check runs CNI CHECK of the network for p against the cached ADD result,
// with the config of that ADD.
func (m *Manager) Check(ctx context.Context, p Pod) error {
	list, rt := m.addedConf(p, p.NetNS)
	if list == nil {
		var err error
		if list, err = m.networkList(); err != nil {
			return err
		}
		rt = m.runtimeConf(p, p.NetNS)
	}
	if err := m.cni.CheckNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("CNI CHECK of network %q for pod %s: %w", list.Name, p, err)
	}
	return nil
}

// addedConf returns the network list and runtime config p's CNI ADD ran
// with, from libcni's cache in CacheDir (the file it writes on every
// successful ADD and removes on DEL), or nil when none is cached. CRI-O's
// ocicni tears pods down the same way (GetNetworkListCachedConfig); here
// the network name need not be known, GetCachedAttachments finds it by
// container id.
func (m *Manager) addedConf(p Pod, nsPath string) (*libcni.NetworkConfigList, *libcni.RuntimeConf) {
	atts, err := m.cni.GetCachedAttachments(p.ID)
	if err != nil {
		klog.InfoS("Reading the CNI cache failed, using the current config", "pod", p.String(), "err", err)
		return nil, nil
	}
	for _, a := range atts {
		if a.IfName != IfName {
			continue
		}
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil || list.Name != a.Network {
			klog.InfoS("Cached CNI config unusable, using the current config", "pod", p.String(), "network", a.Network, "err", err)
			return nil, nil
		}
		rt := m.runtimeConf(p, nsPath)
		if a.CniArgs != nil {
			rt.Args = a.CniArgs
		}
		if a.CapabilityArgs != nil {
			rt.CapabilityArgs = a.CapabilityArgs
		}
		return list, rt
	}
	return nil, nil
}

// String names the pod in errors and logs: namespace/name (id).
func (p Pod) String() string {
	return fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, p.ID)
}

func (m *Manager) runtimeConf(p Pod, nsPath string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: p.ID,
		NetNS:       nsPath,
		IfName:      IfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.Namespace},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ID},
			{"K8S_POD_UID", p.UID},
		},
		CapabilityArgs: map[string]any{},
	}
	// The same capability args on ADD and DEL: portmap finds its rules by
	// container id, but the bandwidth plugin only acts when it sees its args.
	if len(p.PortMappings) > 0 {
		pms := make([]map[string]any, 0, len(p.PortMappings))
		for _, pm := range p.PortMappings {
			proto := pm.Protocol
			if proto == "" {
				proto = "tcp"
			}
			e := map[string]any{"hostPort": pm.HostPort, "containerPort": pm.ContainerPort, "protocol": proto}
			if pm.HostIP != "" {
				e["hostIP"] = pm.HostIP
			}
			pms = append(pms, e)
		}
		rt.CapabilityArgs["portMappings"] = pms
	}
	if b := p.Bandwidth; b != nil {
		rt.CapabilityArgs["bandwidth"] = map[string]uint64{
			"ingressRate": b.IngressRate, "ingressBurst": b.IngressBurst,
			"egressRate": b.EgressRate, "egressBurst": b.EgressBurst,
		}
	}
	if p.CgroupParent != "" {
		rt.CapabilityArgs["cgroupPath"] = p.CgroupParent
	}
	return rt
}

func parseResult(network string, raw types.Result) (*Result, error) {
	r, err := types100.NewResultFromResult(raw)
	if err != nil {
		return nil, fmt.Errorf("reading the CNI result: %w", err)
	}
	res := &Result{Network: network, Raw: raw}
	for _, ip := range r.IPs {
		res.IPs = append(res.IPs, ip.Address.IP)
	}
	// IPv4 first, else the plugins' order.
	slices.SortStableFunc(res.IPs, func(a, b net.IP) int {
		a4, b4 := a.To4() != nil, b.To4() != nil
		switch {
		case a4 == b4:
			return 0
		case a4:
			return -1
		}
		return 1
	})
	for _, i := range r.Interfaces {
		res.Interfaces = append(res.Interfaces, Interface{Name: i.Name, MAC: i.Mac, Sandbox: i.Sandbox})
	}
	if len(res.IPs) == 0 {
		return nil, fmt.Errorf("CNI result of network %q has no IP address", network)
	}
	return res, nil
}
