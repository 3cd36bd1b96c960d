// Package node is the node half of a kubelet: it registers the Node
// object, keeps the node's Lease renewed and posts the NodeStatus
// (capacity, addresses, versions, the pressure and Ready conditions), the
// way pkg/kubelet's node status code and the component-helpers lease
// controller do, with only what a system:node:<name> identity may do.
//
//	Run ──► registering: Create the Node; AlreadyExists → Get, add our labels
//	   │    and annotation, patch our status. Failure: back-off 100ms…7s.
//	   ▼
//	registered (Registered() closed, Current() set, OnPodCIDR if assigned)
//	   ├── lease loop: renew every RenewInterval (±4%); after a failure
//	   │   retry after 200ms, doubling to 7s.
//	   └── status loop: every StatusUpdateFrequency Get the Node (spec.podCIDR,
//	       taints, labels for Current), compute the status, patch it if
//	       anything but heartbeats changed or StatusReportFrequency passed
//	       (UpdateStatusSoon: a round now). Failure: logged, retried next tick.
//	ctx done ──► both loops stop, Run returns nil.
//
// The Node is never registered again once it exists: like the kubelet,
// a deleted Node stays deleted until the agent restarts.
package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	criapi "k8s.io/cri-api/pkg/apis"
	"k8s.io/klog/v2"
)

// Options configures a Node. Zero durations and MaxPods take the
// kubelet's defaults.
type Options struct {
	Client   kubernetes.Interface
	NodeName string // required
	// Addresses are the node's IPs: the first of each family becomes an
	// InternalIP address, the first given first. Hostname is always added
	// as the Hostname address.
	Addresses []string
	Hostname  string // default: os.Hostname(), lowercased
	// KubeletPort is status.daemonEndpoints.kubeletEndpoint.port, where the
	// API server reaches logs/exec/port-forward; 0 until it serves.
	KubeletPort int32
	MaxPods     int // capacity "pods"; default 110
	// Labels are set at registration and added to an existing Node.
	// Labels NodeRestriction would refuse are dropped (and logged); labels
	// others set are never removed.
	Labels  map[string]string
	Runtime criapi.RuntimeService // Version for nodeInfo, Status for Ready
	// RootDir's filesystem is the node's ephemeral-storage and the one
	// DiskPressure watches. Default "/".
	RootDir               string
	LeaseDuration         time.Duration // default 40s
	RenewInterval         time.Duration // lease renewal; default 10s
	StatusUpdateFrequency time.Duration // status computation; default 10s
	StatusReportFrequency time.Duration // patch even if unchanged; default 5m
	// Reserved is taken off the capacity to give allocatable: system and
	// kube reservations plus the hard eviction thresholds (memory,
	// ephemeral-storage), as the kubelet computes node allocatable.
	Reserved v1.ResourceList
	// Pressure, when set, says which pressure conditions are True (the
	// eviction manager's view, with its thresholds and transition
	// period); nil: the node's own reading against the kubelet's default
	// hard thresholds.
	Pressure func() (memory, disk, pid bool)
	// OnPodCIDR is called with spec.podCIDRs (comma-separated, as CRI
	// UpdateRuntimeConfig takes them) when they first appear and whenever
	// they change, from the goroutine running Run.
	OnPodCIDR func(ctx context.Context, cidr string)
	// VolumesInUse, when set, gives status.volumesInUse: the unique names
	// of the attachable volumes pods on the node use or may still have
	// mounted (the volume manager's; the attach/detach controller does
	// not detach them). ok false leaves the field as the API server has
	// it (the kubelet's "reconciler states not synced yet").
	// status.volumesAttached is the controller's and is never written.
	VolumesInUse func() (names []v1.UniqueVolumeName, ok bool)
}

// Node registers and heartbeats one Node object. Make it with New.
type Node struct {
	o          Options
	addresses  []string
	labels     map[string]string
	registered chan struct{}
	running    atomic.Bool
	statusKick chan struct{} // UpdateStatusSoon

	mu      sync.Mutex
	current *v1.Node

	// Owned by Run's goroutine.
	kubeletVersion string // "" until the API server said
	versionWarned  bool
	runtimeVersion string // last known; kept when Version fails
	podCIDR        string // last passed to OnPodCIDR
	lastReport     time.Time
	hold           pressureHold
	lastMachineErr string
}

// New checks o and fills in the defaults.
func New(o Options) (*Node, error) {
	if o.NodeName == "" {
		return nil, errors.New("node: NodeName is required")
	}
	if o.Client == nil {
		return nil, fmt.Errorf("node %q: no API client", o.NodeName)
	}
	if o.Runtime == nil {
		return nil, fmt.Errorf("node %q: no runtime service", o.NodeName)
	}
	addrs, err := pickAddresses(o.Addresses)
	if err != nil {
		return nil, fmt.Errorf("node %q: %w", o.NodeName, err)
	}
	if o.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node %q: hostname: %w", o.NodeName, err)
		}
		o.Hostname = h
	}
	// The kubelet lowercases it too: it is a label value and a DNS name.
	o.Hostname = strings.ToLower(strings.TrimSpace(o.Hostname))
	if o.MaxPods <= 0 {
		o.MaxPods = 110
	}
	if o.RootDir == "" {
		o.RootDir = "/"
	}
	setDefault(&o.LeaseDuration, 40*time.Second)
	setDefault(&o.RenewInterval, 10*time.Second)
	setDefault(&o.StatusUpdateFrequency, 10*time.Second)
	setDefault(&o.StatusReportFrequency, 5*time.Minute)
	if o.LeaseDuration < time.Second {
		return nil, fmt.Errorf("node %q: lease duration %v is under a second", o.NodeName, o.LeaseDuration)
	}

	kept, dropped := filterLabels(o.Labels)
	if len(dropped) > 0 {
		klog.InfoS("Dropping node labels the API server would refuse from a node", "node", klog.KRef("", o.NodeName), "labels", dropped)
	}
	return &Node{
		o:          o,
		addresses:  addrs,
		labels:     nodeLabels(o.Hostname, kept),
		registered: make(chan struct{}),
		statusKick: make(chan struct{}, 1),
	}, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// UpdateStatusSoon asks the status loop for a round now rather than at
// its next tick: the volume manager waits for a new volume to be reported
// in status.volumesInUse before it mounts it.
func (n *Node) UpdateStatusSoon() {
	select {
	case n.statusKick <- struct{}{}:
	default:
	}
}

// Registered is closed once the Node exists with our labels and status.
func (n *Node) Registered() <-chan struct{} { return n.registered }

// Current returns a copy of the Node as last read from or written to the
// API server, nil before registration.
func (n *Node) Current() *v1.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.current.DeepCopy()
}

func (n *Node) setCurrent(node *v1.Node) {
	n.mu.Lock()
	n.current = node.DeepCopy()
	n.mu.Unlock()
}

func (n *Node) nodeUID() types.UID {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.current == nil {
		return ""
	}
	return n.current.UID
}

// Run registers the Node, then renews the Lease and posts the status
// until ctx ends; it returns nil then. It may be called once.
func (n *Node) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return fmt.Errorf("node %q: Run called twice", n.o.NodeName)
	}
	node, err := n.register(ctx)
	if err != nil {
		return nil // ctx ended
	}
	n.setCurrent(node)
	n.lastReport = time.Now()
	close(n.registered)
	n.checkPodCIDR(ctx, node)

	var wg sync.WaitGroup
	wg.Go(func() { n.runLease(ctx) })
	n.runStatus(ctx)
	wg.Wait()
	return nil
}

// requestTimeout bounds each API and CRI call, as the kubelet bounds its
// heartbeat client: a hung call must not outlive the lease it protects.
func (n *Node) requestTimeout() time.Duration {
	return max(5*time.Second, min(n.o.LeaseDuration, n.o.StatusUpdateFrequency))
}

func (n *Node) logRef() klog.ObjectRef { return klog.KRef("", n.o.NodeName) }

// register retries until the Node exists with our status or ctx ends.
func (n *Node) register(ctx context.Context) (*v1.Node, error) {
	backoff := 100 * time.Millisecond
	for {
		node, err := n.tryRegister(ctx)
		if err == nil {
			return node, nil
		}
		klog.ErrorS(err, "Registering the node failed; will retry", "node", n.logRef(), "retryIn", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, 7*time.Second)
	}
}

func (n *Node) tryRegister(ctx context.Context) (*v1.Node, error) {
	n.discoverVersion(ctx)
	now := time.Now()
	obs := n.observe(ctx, now)
	nodes := n.o.Client.CoreV1().Nodes()

	node := newNode(n.o.NodeName, n.labels)
	setStatus(node, n.statusConfig(), obs, now)
	cctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
	defer cancel()
	created, err := nodes.Create(cctx, node, metav1.CreateOptions{})
	if err == nil {
		klog.InfoS("Registered node", "node", n.logRef(), "uid", created.UID)
		return created, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("node %q: create: %w", n.o.NodeName, err)
	}

	existing, err := nodes.Get(cctx, n.o.NodeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("node %q: get existing node: %w", n.o.NodeName, err)
	}
	want := existing.DeepCopy()
	reconcileMeta(want, n.labels)
	setStatus(want, n.statusConfig(), obs, now)
	patched, err := n.patchStatus(cctx, existing, want)
	if err != nil {
		return nil, err
	}
	klog.InfoS("Node was already registered; labels and status reconciled", "node", n.logRef(), "uid", patched.UID)
	return patched, nil
}

// discoverVersion asks the API server its version until it answers once.
func (n *Node) discoverVersion(ctx context.Context) {
	if n.kubeletVersion != "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
	defer cancel()
	info, err := discovery.ToServerVersionInterfaceWithContext(n.o.Client.Discovery()).ServerVersionWithContext(ctx)
	if err != nil {
		// Once is enough: registration and status errors say more when the
		// API server is down.
		if !n.versionWarned {
			klog.ErrorS(err, "Asking the API server its version failed; reporting the fallback kubelet version until it answers",
				"node", n.logRef(), "kubeletVersion", fallbackKubeletVersion)
			n.versionWarned = true
		}
		return
	}
	n.kubeletVersion = kubeletVersionFor(info.GitVersion)
	klog.V(2).InfoS("Kubelet version from the API server", "node", n.logRef(), "gitVersion", info.GitVersion, "kubeletVersion", n.kubeletVersion)
}

func (n *Node) statusConfig() statusConfig {
	kv := n.kubeletVersion
	if kv == "" {
		kv = fallbackKubeletVersion
	}
	return statusConfig{
		addresses:      n.addresses,
		hostname:       n.o.Hostname,
		kubeletPort:    n.o.KubeletPort,
		maxPods:        n.o.MaxPods,
		kubeletVersion: kv,
		reserved:       n.o.Reserved,
	}
}

// observe reads the host and asks the runtime how it is.
func (n *Node) observe(ctx context.Context, now time.Time) observation {
	m, err := readMachine(n.o.RootDir)
	if msg := fmt.Sprint(err); err != nil && msg != n.lastMachineErr {
		klog.ErrorS(err, "Reading the machine's state failed in part", "node", n.logRef())
		n.lastMachineErr = msg
	} else if err == nil {
		n.lastMachineErr = ""
	}

	ctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
	defer cancel()
	// "0.1.0" is the API version the kubelet passes; runtimes ignore it.
	if v, err := n.o.Runtime.Version(ctx, "0.1.0"); err == nil {
		n.runtimeVersion = v.GetRuntimeName() + "://" + v.GetRuntimeVersion()
	}
	st, err := n.o.Runtime.Status(ctx, false)
	obs := observation{
		machine:        m,
		runtimeVersion: n.runtimeVersion,
		runtimeErrs:    runtimeErrors(st, err),
		pressures:      n.pressures(m, now),
	}
	if n.o.VolumesInUse != nil {
		obs.volumesInUse, obs.volumesInUseKnown = n.o.VolumesInUse()
	}
	return obs
}

func (n *Node) runStatus(ctx context.Context) {
	t := time.NewTicker(n.o.StatusUpdateFrequency)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.statusKick:
		}
		if err := n.syncStatus(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Updating node status failed; will retry", "node", n.logRef(), "retryIn", n.o.StatusUpdateFrequency)
		}
	}
}

// syncStatus is one status round. It reads the Node every round rather
// than trusting our last write: taints, labels and podCIDR are set by
// others, and Current must show them to admission within a round.
func (n *Node) syncStatus(ctx context.Context) error {
	n.discoverVersion(ctx)
	gctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
	orig, err := n.o.Client.CoreV1().Nodes().Get(gctx, n.o.NodeName, metav1.GetOptions{})
	cancel()
	if err != nil {
		return fmt.Errorf("node %q: get: %w", n.o.NodeName, err)
	}
	n.setCurrent(orig)
	n.checkPodCIDR(ctx, orig)

	now := time.Now()
	want := orig.DeepCopy()
	ensureOSArchLabels(want)
	setStatus(want, n.statusConfig(), n.observe(ctx, now), now)
	changed := nodeChanged(orig, want)
	if !changed && now.Sub(n.lastReport) < n.o.StatusReportFrequency {
		return nil
	}
	logReadyChange(n.logRef(), orig, want)

	pctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
	defer cancel()
	patched, err := n.patchStatus(pctx, orig, want)
	if err != nil {
		return err
	}
	klog.V(4).InfoS("Posted node status", "node", n.logRef(), "changed", changed)
	n.lastReport = now
	n.setCurrent(patched)
	n.checkPodCIDR(ctx, patched)
	return nil
}

func (n *Node) patchStatus(ctx context.Context, orig, want *v1.Node) (*v1.Node, error) {
	patch, err := statusPatch(orig, want)
	if err != nil {
		return nil, fmt.Errorf("node %q: make status patch: %w", n.o.NodeName, err)
	}
	patched, err := n.o.Client.CoreV1().Nodes().Patch(ctx, n.o.NodeName, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return nil, fmt.Errorf("node %q: patch status: %w", n.o.NodeName, err)
	}
	return patched, nil
}

// checkPodCIDR tells OnPodCIDR about a new or changed pod CIDR.
func (n *Node) checkPodCIDR(ctx context.Context, node *v1.Node) {
	cidr := podCIDRs(node)
	if cidr == "" || cidr == n.podCIDR {
		return
	}
	klog.InfoS("Pod CIDR assigned", "node", n.logRef(), "podCIDR", cidr, "previous", n.podCIDR)
	n.podCIDR = cidr
	if n.o.OnPodCIDR != nil {
		n.o.OnPodCIDR(ctx, cidr)
	}
}

// logReadyChange logs Ready flips, which the kubelet reports as events.
func logReadyChange(ref klog.ObjectRef, old, new *v1.Node) {
	was, now := readyOf(old), readyOf(new)
	if now == nil || (was != nil && was.Status == now.Status) {
		return
	}
	klog.InfoS("Node readiness changed", "node", ref, "ready", now.Status, "reason", now.Reason, "message", now.Message)
}

func readyOf(node *v1.Node) *v1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == v1.NodeReady {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

func (n *Node) pressures(m machine, now time.Time) pressures {
	if n.o.Pressure != nil {
		var p pressures
		p.Memory, p.Disk, p.PID = n.o.Pressure()
		return p
	}
	return n.hold.apply(observePressure(m), now)
}
