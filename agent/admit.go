package agent

import (
	"fmt"
	goruntime "runtime"
	"strings"

	v1 "k8s.io/api/core/v1"
	resourcehelper "k8s.io/component-helpers/resource"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

// admitResult is the node's verdict on a pod, with the kubelet's reasons
// (pkg/kubelet/lifecycle/predicate.go): OutOfcpu, OutOfmemory,
// OutOfephemeral-storage, OutOfpods, NodeAffinity, NodePorts,
// TaintToleration.
type admitResult struct {
	Admit   bool
	Reason  string
	Message string
}

// admit runs the kubelet's general predicates for pod against node and the
// pods already running there: the scheduler checked them too, but a pod
// may be bound directly (spec.nodeName) or the node may have changed since.
// Only the first failure is reported, as the kubelet does.
func admit(pod *v1.Pod, node *v1.Node, active []*v1.Pod, maxPods int) admitResult {
	// The OS checks come first, as the kubelet's: no eviction would help.
	// (The kubelet reads the OS from the pod's labels here, not its
	// nodeSelector; so do we.)
	if os, ok := pod.Labels[v1.LabelOSStable]; ok && os != goruntime.GOOS {
		return admitResult{Reason: "PodOSSelectorNodeLabelDoesNotMatch", Message: "Pod was rejected: Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"}
	}
	if pod.Spec.OS != nil && string(pod.Spec.OS.Name) != goruntime.GOOS {
		return admitResult{Reason: "PodOSNotSupported", Message: "Pod was rejected: Failed to admit pod as the OS field doesn't match node OS"}
	}
	if errs := hostUsersErrors(&pod.Spec); len(errs) > 0 {
		// The API server refuses these; a pod it let through (its alpha
		// UserNamespacesHostNetworkSupport gate) cannot run here either.
		return admitResult{Reason: "HostUsersForbidden", Message: "Pod was rejected: " + strings.Join(errs, "; ")}
	}
	if err := checkSysctls(pod); err != nil {
		return admitResult{Reason: "SysctlForbidden", Message: "Pod was rejected: forbidden sysctl: " + err.Error()}
	}
	// Resources first, in the scheduler's order: pods, cpu, memory,
	// ephemeral-storage.
	alloc := node.Status.Allocatable
	allowed := maxPods
	if q, ok := alloc[v1.ResourcePods]; ok {
		allowed = int(q.Value())
	}
	if len(active)+1 > allowed {
		return insufficient(v1.ResourcePods, 1, int64(len(active)), int64(allowed))
	}
	req := podRequests(pod)
	used := v1.ResourceList{}
	for _, p := range active {
		for name, q := range podRequests(p) {
			u := used[name]
			u.Add(q)
			used[name] = u
		}
	}
	for _, name := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory, v1.ResourceEphemeralStorage} {
		r, ok := req[name]
		if !ok || r.IsZero() {
			continue
		}
		capQ, has := alloc[name]
		if !has {
			continue // the node does not report it: nothing to check against
		}
		u := used[name]
		if name == v1.ResourceCPU {
			if r.MilliValue() > capQ.MilliValue()-u.MilliValue() {
				return insufficient(name, r.MilliValue(), u.MilliValue(), capQ.MilliValue())
			}
			continue
		}
		if r.Value() > capQ.Value()-u.Value() {
			return insufficient(name, r.Value(), u.Value(), capQ.Value())
		}
	}
	if ok, err := nodeaffinity.GetRequiredNodeAffinity(pod).Match(node); !ok || err != nil {
		return predicateFailed("NodeAffinity", "node(s) didn't match Pod's node affinity/selector")
	}
	if conflict := hostPortConflict(pod, active); conflict != "" {
		return predicateFailed("NodePorts", "node(s) didn't have free ports for the requested pod ports")
	}
	// The kubelet only looks at NoExecute taints: NoSchedule is the
	// scheduler's business, and a pod bound directly may ignore it.
	if _, untolerated := corev1helpers.FindMatchingUntoleratedTaint(klog.Background(), node.Spec.Taints, pod.Spec.Tolerations, func(t *v1.Taint) bool {
		return t.Effect == v1.TaintEffectNoExecute
	}, false); untolerated {
		return predicateFailed("TaintToleration", "node(s) had taints that the pod didn't tolerate")
	}
	return admitResult{Admit: true}
}

func podRequests(p *v1.Pod) v1.ResourceList {
	return resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{})
}

func insufficient(name v1.ResourceName, requested, used, capacity int64) admitResult {
	reason := "OutOf" + string(name)
	return admitResult{Reason: reason, Message: fmt.Sprintf("Pod was rejected: Node didn't have enough resource: %s, requested: %d, used: %d, capacity: %d",
		name, requested, used, capacity)}
}

func predicateFailed(name, desc string) admitResult {
	return admitResult{Reason: name, Message: fmt.Sprintf("Pod was rejected: Predicate %s failed: %s", name, desc)}
}

// hostPortConflict names a hostPort of pod another active pod holds.
func hostPortConflict(pod *v1.Pod, active []*v1.Pod) string {
	type key struct {
		ip, proto string
		port      int32
	}
	held := map[key]bool{}
	add := func(p *v1.Pod, check bool) string {
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.HostPort == 0 {
					continue
				}
				proto := string(cp.Protocol)
				if proto == "" {
					proto = string(v1.ProtocolTCP)
				}
				ip := cp.HostIP
				if ip == "" {
					ip = "0.0.0.0"
				}
				k := key{ip, proto, cp.HostPort}
				if check {
					// 0.0.0.0 clashes with every address of the port.
					for h := range held {
						if h.proto == k.proto && h.port == k.port && (h.ip == k.ip || h.ip == "0.0.0.0" || k.ip == "0.0.0.0") {
							return fmt.Sprintf("%s/%d", proto, cp.HostPort)
						}
					}
					continue
				}
				held[k] = true
			}
		}
		return ""
	}
	for _, p := range active {
		if p.UID != pod.UID {
			add(p, false)
		}
	}
	return add(pod, true)
}

// safeSysctls are the kubelet's safe sysctls (pkg/kubelet/sysctl), with
// the namespace each lives in; the node allows no unsafe ones
// (allowedUnsafeSysctls is empty by default, and peapod has no setting
// for it yet).
var safeSysctls = map[string]string{
	"kernel.shm_rmid_forced":              "ipc",
	"net.ipv4.ip_local_port_range":        "net",
	"net.ipv4.tcp_syncookies":             "net",
	"net.ipv4.ping_group_range":           "net",
	"net.ipv4.ip_unprivileged_port_start": "net",
	"net.ipv4.ip_local_reserved_ports":    "net",
	"net.ipv4.tcp_keepalive_time":         "net",
	"net.ipv4.tcp_fin_timeout":            "net",
	"net.ipv4.tcp_keepalive_intvl":        "net",
	"net.ipv4.tcp_keepalive_probes":       "net",
	"net.ipv4.tcp_rmem":                   "net",
	"net.ipv4.tcp_wmem":                   "net",
	"net.ipv4.tcp_slow_start_after_idle":  "net",
	"net.ipv4.tcp_notsent_lowat":          "net",
}

// checkSysctls refuses a pod sysctl that is not safe, or a safe one of a
// namespace the pod shares with the host, with the kubelet's words.
func checkSysctls(pod *v1.Pod) error {
	sc := pod.Spec.SecurityContext
	if sc == nil {
		return nil
	}
	for _, s := range sc.Sysctls {
		// "net/ipv4/tcp_rmem" is the same sysctl as "net.ipv4.tcp_rmem".
		name := s.Name
		if i := strings.IndexAny(name, "./"); i >= 0 && name[i] == '/' {
			name = strings.ReplaceAll(name, "/", ".")
		}
		ns, ok := safeSysctls[name]
		switch {
		case !ok:
			return fmt.Errorf("%q not allowlisted", s.Name)
		case ns == "net" && pod.Spec.HostNetwork, ns == "ipc" && pod.Spec.HostIPC:
			return fmt.Errorf("%q not allowed with host %s enabled", s.Name, ns)
		}
	}
	return nil
}
