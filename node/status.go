package node

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	goruntime "runtime"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/version"
)

const (
	// annotationControllerAttach hands attach/detach of this node's volumes
	// to the attach-detach controller, as the kubelet does by default.
	annotationControllerAttach = "volumes.kubernetes.io/controller-managed-attach-detach"

	// The beta OS and arch labels: deprecated, but the kubelet still sets
	// them and old manifests still select on them.
	labelOSBeta   = "beta.kubernetes.io/os"
	labelArchBeta = "beta.kubernetes.io/arch"

	// fallbackKubeletVersion is reported when the API server will not say
	// its version: the oldest release whose API this agent's client
	// libraries (k8s.io/api v0.37) speak, so the node never claims to be
	// newer than a control plane it can work with.
	fallbackKubeletVersion = "v1.37.0"
)

// statusConfig is what the status takes from Options and discovery.
type statusConfig struct {
	addresses      []string // InternalIPs, primary family first
	hostname       string
	kubeletPort    int32
	maxPods        int
	kubeletVersion string
	reserved       v1.ResourceList
}

// observation is what one status round learned about the host and the
// runtime.
type observation struct {
	machine        machine
	runtimeVersion string  // "<runtime_name>://<runtime_version>", "" if unknown
	runtimeErrs    []error // why the runtime or its network is not ready
	pressures      pressures
	// volumesInUse is status.volumesInUse when volumesInUseKnown;
	// otherwise the field stays as it is.
	volumesInUse      []v1.UniqueVolumeName
	volumesInUseKnown bool
}

// setStatus writes this round's status into node (a copy of the Node as
// the API server has it) at time now. Fields the kubelet does not own
// (extended resources patched in by an admin, volumesAttached — the
// attach/detach controller's —, conditions of other components) stay as
// they are; volumesInUse is set once the volume manager knows it.
func setStatus(node *v1.Node, cfg statusConfig, obs observation, now time.Time) {
	s := &node.Status
	s.Capacity = capacity(s.Capacity, obs.machine, cfg.maxPods)
	s.Allocatable = Allocatable(s.Capacity, cfg.reserved)

	s.Addresses = nodeAddresses(cfg.addresses, cfg.hostname)
	s.DaemonEndpoints = v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: cfg.kubeletPort}}
	s.NodeInfo = nodeInfo(obs.machine, obs.runtimeVersion, cfg.kubeletVersion)

	if obs.volumesInUseKnown {
		s.VolumesInUse = nil
		if len(obs.volumesInUse) > 0 {
			s.VolumesInUse = slices.Clone(obs.volumesInUse)
			slices.Sort(s.VolumesInUse)
		}
	}

	s.Conditions = setConditions(s.Conditions, now,
		memoryCondition(obs.pressures.Memory),
		diskCondition(obs.pressures.Disk),
		pidCondition(obs.pressures.PID),
		readyCondition(obs.runtimeErrs, s.Capacity),
	)
}

// capacity returns old with the resources the kubelet owns recomputed: set
// when known, removed when not (then Ready says which is missing). Other
// entries (extended resources) are kept.
func capacity(old v1.ResourceList, m machine, maxPods int) v1.ResourceList {
	c := old.DeepCopy()
	if c == nil {
		c = v1.ResourceList{}
	}
	maps.DeleteFunc(c, func(k v1.ResourceName, _ resource.Quantity) bool {
		return strings.HasPrefix(string(k), v1.ResourceHugePagesPrefix)
	})
	set := func(name v1.ResourceName, q *resource.Quantity, ok bool) {
		if ok {
			c[name] = *q
		} else {
			delete(c, name)
		}
	}
	set(v1.ResourceCPU, resource.NewMilliQuantity(int64(m.NumCPU)*1000, resource.DecimalSI), m.NumCPU > 0)
	set(v1.ResourceMemory, resource.NewQuantity(int64(m.MemTotal), resource.BinarySI), m.MemTotal > 0)
	// DecimalSI as cadvisor has it, so the serialised value reads the same
	// as a kubelet's on this host.
	set(v1.ResourceEphemeralStorage, resource.NewQuantity(int64(m.FSTotal), resource.DecimalSI), m.FSTotal > 0)
	set(v1.ResourcePods, resource.NewQuantity(int64(maxPods), resource.DecimalSI), true)
	// Every size the kernel offers, at zero: the runtime cannot set hugetlb
	// limits on this host (sandbox/spec.DropHugepageLimits), so a pod that
	// asks for huge pages must stay unschedulable here rather than run
	// unbounded. The names still tell the scheduler the sizes exist.
	for _, size := range m.HugePageSizes {
		name := v1.ResourceName(v1.ResourceHugePagesPrefix + resource.NewQuantity(int64(size), resource.BinarySI).String())
		c[name] = *resource.NewQuantity(0, resource.BinarySI)
	}
	return c
}

// pickAddresses validates the configured node IPs and keeps the first of
// each family, the first one given first: the API server allows one
// InternalIP per family, and the first is the one it uses.
func pickAddresses(in []string) ([]string, error) {
	var out []string
	var have4, have6 bool
	for _, s := range in {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("node address %q: %w", s, err)
		}
		if a.IsUnspecified() {
			return nil, fmt.Errorf("node address %q is unspecified", s)
		}
		a = a.Unmap()
		if (a.Is4() && have4) || (a.Is6() && have6) {
			continue
		}
		have4, have6 = have4 || a.Is4(), have6 || a.Is6()
		out = append(out, a.String())
	}
	return out, nil
}

func nodeAddresses(ips []string, hostname string) []v1.NodeAddress {
	out := make([]v1.NodeAddress, 0, len(ips)+1)
	for _, ip := range ips {
		out = append(out, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip})
	}
	return append(out, v1.NodeAddress{Type: v1.NodeHostName, Address: hostname})
}

func nodeInfo(m machine, runtimeVersion, kubeletVersion string) v1.NodeSystemInfo {
	return v1.NodeSystemInfo{
		MachineID:               m.MachineID,
		SystemUUID:              m.SystemUUID,
		BootID:                  m.BootID,
		KernelVersion:           m.KernelVersion,
		OSImage:                 m.OSImage,
		ContainerRuntimeVersion: runtimeVersion,
		KubeletVersion:          kubeletVersion,
		// KubeProxyVersion is deprecated; the kubelet clears it.
		OperatingSystem: goruntime.GOOS,
		Architecture:    goruntime.GOARCH,
	}
}

// kubeletVersionFor turns the API server's gitVersion into the version
// this node reports. Reporting the API server's own version keeps the node
// inside the version-skew policy (a kubelet may not be newer than its API
// server), which the API server, kubectl and upgrade tooling check against
// this field, whatever release of the agent runs. Build metadata
// ("+k3s1") is dropped: it names a distribution, not a release.
func kubeletVersionFor(gitVersion string) string {
	v, err := version.ParseSemantic(gitVersion)
	if err != nil {
		return fallbackKubeletVersion
	}
	s := fmt.Sprintf("v%d.%d.%d", v.Major(), v.Minor(), v.Patch())
	if pre := v.PreRelease(); pre != "" {
		s += "-" + pre
	}
	return s
}

// nodeRestrictionAllowed are the kubernetes.io / k8s.io labels the
// NodeRestriction admission plugin lets a node set on itself
// (k8s.io/kubelet/pkg/apis.IsKubeletLabel).
var nodeRestrictionAllowed = []string{
	v1.LabelHostname,
	v1.LabelTopologyZone,
	v1.LabelTopologyRegion,
	v1.LabelFailureDomainBetaZone,
	v1.LabelFailureDomainBetaRegion,
	v1.LabelInstanceType,
	v1.LabelInstanceTypeStable,
	v1.LabelOSStable,
	v1.LabelArchStable,
	labelOSBeta,
	labelArchBeta,
}

// filterLabels drops the labels the API server would refuse from a node:
// NodeRestriction forbids node-restriction.kubernetes.io/ and every other
// kubernetes.io / k8s.io label outside the kubelet's set, and one refused
// label fails the whole registration. Malformed keys and values go too.
// dropped is sorted, with the reason, for the log.
func filterLabels(in map[string]string) (kept map[string]string, dropped []string) {
	kept = map[string]string{}
	for k, v := range in {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			dropped = append(dropped, fmt.Sprintf("%s (%s)", k, strings.Join(errs, "; ")))
			continue
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			dropped = append(dropped, fmt.Sprintf("%s (%s)", k, strings.Join(errs, "; ")))
			continue
		}
		if reason := nodeRestrictionForbids(k); reason != "" {
			dropped = append(dropped, fmt.Sprintf("%s (%s)", k, reason))
			continue
		}
		kept[k] = v
	}
	sort.Strings(dropped)
	return kept, dropped
}

func nodeRestrictionForbids(key string) string {
	ns, _, ok := strings.Cut(key, "/")
	if !ok {
		return ""
	}
	inDomain := func(d string) bool { return ns == d || strings.HasSuffix(ns, "."+d) }
	if inDomain(v1.LabelNamespaceNodeRestriction) {
		return "NodeRestriction forbids nodes setting " + v1.LabelNamespaceNodeRestriction + " labels"
	}
	if !inDomain("kubernetes.io") && !inDomain("k8s.io") {
		return ""
	}
	if slices.Contains(nodeRestrictionAllowed, key) || inDomain(v1.LabelNamespaceSuffixKubelet) || inDomain(v1.LabelNamespaceSuffixNode) {
		return ""
	}
	return "NodeRestriction allows nodes only the kubelet's kubernetes.io and k8s.io labels"
}

// nodeLabels are the labels we register with: the kubelet's defaults, then
// the (filtered) configured ones, which win as the kubelet's --node-labels do.
func nodeLabels(hostname string, extra map[string]string) map[string]string {
	l := map[string]string{
		v1.LabelHostname:   hostname,
		v1.LabelOSStable:   goruntime.GOOS,
		v1.LabelArchStable: goruntime.GOARCH,
		labelOSBeta:        goruntime.GOOS,
		labelArchBeta:      goruntime.GOARCH,
	}
	maps.Copy(l, extra)
	return l
}

// newNode is the Node we create. No taints: the node lifecycle controller
// puts not-ready / unreachable taints on and takes them off itself, and a
// node may not change its taints after creation (NodeRestriction).
func newNode(name string, labels map[string]string) *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      maps.Clone(labels),
			Annotations: map[string]string{annotationControllerAttach: "true"},
		},
	}
}

// reconcileMeta adds our labels and the attach/detach annotation to a Node
// that already existed, changing values that differ; labels and annotations
// others set stay.
func reconcileMeta(existing *v1.Node, labels map[string]string) {
	if existing.Labels == nil {
		existing.Labels = map[string]string{}
	}
	maps.Copy(existing.Labels, labels)
	if existing.Annotations == nil {
		existing.Annotations = map[string]string{}
	}
	existing.Annotations[annotationControllerAttach] = "true"
}

// ensureOSArchLabels puts back the OS and arch labels every round, as the
// kubelet does: the scheduler's node affinity for OS-specific pods relies
// on them.
func ensureOSArchLabels(node *v1.Node) {
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	node.Labels[v1.LabelOSStable] = goruntime.GOOS
	node.Labels[v1.LabelArchStable] = goruntime.GOARCH
}

// nodeChanged says whether new differs from old in anything we post other
// than heartbeat times; if not, the patch can wait for the report period.
func nodeChanged(old, new *v1.Node) bool {
	return !maps.Equal(old.Labels, new.Labels) ||
		!maps.Equal(old.Annotations, new.Annotations) ||
		statusChanged(&old.Status, &new.Status)
}

// statusChanged is the kubelet's nodeStatusHasChanged: any difference but
// the conditions' lastHeartbeatTime.
func statusChanged(old, new *v1.NodeStatus) bool {
	if len(old.Conditions) != len(new.Conditions) {
		return true
	}
	strip := func(s *v1.NodeStatus) *v1.NodeStatus {
		c := s.DeepCopy()
		for i := range c.Conditions {
			c.Conditions[i].LastHeartbeatTime = metav1.Time{}
		}
		sort.SliceStable(c.Conditions, func(i, j int) bool { return c.Conditions[i].Type < c.Conditions[j].Type })
		return c
	}
	return !apiequality.Semantic.DeepEqual(strip(old), strip(new))
}

// statusPatch is the strategic merge patch from old to new for the status
// subresource, as the kubelet's nodeutil.PatchNodeStatus makes it: the
// spec is left out (the status subresource ignores it anyway), metadata
// rides along (labels and annotations are patched through status too).
func statusPatch(old, new *v1.Node) ([]byte, error) {
	oldData, err := json.Marshal(old)
	if err != nil {
		return nil, err
	}
	// status.addresses is declared patchStrategy=merge on "type", but two
	// addresses share type InternalIP on a dual-stack node: a merge would
	// lose one. Replace the list as a whole instead.
	replaceAddresses := len(old.Status.Addresses) > 0 && !apiequality.Semantic.DeepEqual(old.Status.Addresses, new.Status.Addresses)
	diff := new.DeepCopy()
	diff.Spec = old.Spec
	if replaceAddresses {
		diff.Status.Addresses = old.Status.Addresses
	}
	newData, err := json.Marshal(diff)
	if err != nil {
		return nil, err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldData, newData, v1.Node{})
	if err != nil {
		return nil, err
	}
	if !replaceAddresses {
		return patch, nil
	}
	var m map[string]any
	if err := json.Unmarshal(patch, &m); err != nil {
		return nil, err
	}
	status, _ := m["status"].(map[string]any)
	if status == nil {
		status = map[string]any{}
		m["status"] = status
	}
	addrs := make([]any, 0, len(new.Status.Addresses)+1)
	for _, a := range new.Status.Addresses {
		addrs = append(addrs, map[string]any{"type": string(a.Type), "address": a.Address})
	}
	status["addresses"] = append(addrs, map[string]any{"$patch": "replace"})
	return json.Marshal(m)
}

// podCIDRs is the node's pod CIDRs as the CRI's UpdateRuntimeConfig takes
// them: comma-separated, primary first. spec.podCIDRs is the field of
// record; podCIDR alone is what an old controller manager set.
func podCIDRs(node *v1.Node) string {
	if len(node.Spec.PodCIDRs) > 0 {
		return strings.Join(node.Spec.PodCIDRs, ",")
	}
	return node.Spec.PodCIDR
}

// Allocatable is capacity less what is reserved, never below zero (the
// kubelet's GetNodeAllocatableReservation subtracted from capacity).
func Allocatable(capacity, reserved v1.ResourceList) v1.ResourceList {
	a := capacity.DeepCopy()
	for name, r := range reserved {
		c, ok := a[name]
		if !ok {
			continue
		}
		c.Sub(r)
		if c.Sign() < 0 {
			c.Set(0)
		}
		a[name] = c
	}
	return a
}
