// Package downward computes downward API values — pod fields and container
// resources — and a container's environment once, for every place that uses
// them: the container's environment (agent/), downwardAPI volume files and
// subPathExpr (volumes/). Environment and Expand are peapod's one
// environment resolution and $(VAR) expansion. The rules are the kubelet's
// (its fieldpath and resource helpers, makeEnvironmentVariables and
// expansion): labels and annotations render as sorted key="value" lines, a
// resource is divided by its divisor and rounded up, an unset limit is the
// node's allocatable, an unset request is the limit (API defaulting).
package downward

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Context holds what the pod object alone may not: the pod's and node's
// IPs as the caller knows them (status may not be written yet), and, for
// Environment, the objects and node resources env refers to.
type Context struct {
	PodIPs  []string
	HostIPs []string
	// Objects are the ConfigMaps and Secrets of configMapKeyRef,
	// secretKeyRef and envFrom; nil: none exist.
	Objects Objects
	// Node is the node's allocatable resources: the value of a
	// resourceFieldRef limit the container does not set.
	Node v1.ResourceList
	// Services are the service-link variables of the pod's namespace
	// (KUBERNETES_SERVICE_HOST, FOO_SERVICE_PORT, …): the lowest
	// precedence, and $(VAR) references in env may use them, as the
	// kubelet's makeEnvironmentVariables does.
	Services []v1.EnvVar
}

// FromStatus is the Context a pod's own status gives (IPs only).
func FromStatus(pod *v1.Pod) Context {
	var c Context
	for _, ip := range pod.Status.PodIPs {
		c.PodIPs = append(c.PodIPs, ip.IP)
	}
	if len(c.PodIPs) == 0 && pod.Status.PodIP != "" {
		c.PodIPs = []string{pod.Status.PodIP}
	}
	for _, ip := range pod.Status.HostIPs {
		c.HostIPs = append(c.HostIPs, ip.IP)
	}
	if len(c.HostIPs) == 0 && pod.Status.HostIP != "" {
		c.HostIPs = []string{pod.Status.HostIP}
	}
	return c
}

// FieldValue is the value of a fieldRef path.
func FieldValue(pod *v1.Pod, path string, c Context) (string, error) {
	if k, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[k], nil
	}
	first := func(s []string) string {
		if len(s) > 0 {
			return s[0]
		}
		return ""
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return first(c.HostIPs), nil
	case "status.hostIPs":
		return strings.Join(c.HostIPs, ","), nil
	case "status.podIP":
		return first(c.PodIPs), nil
	case "status.podIPs":
		return strings.Join(c.PodIPs, ","), nil
	}
	return "", fmt.Errorf("unsupported fieldRef fieldPath %q", path)
}

// subscript parses prefix['key'] (or prefix["key"]).
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"[")
	if !ok || !strings.HasSuffix(rest, "]") || len(rest) < 3 {
		return "", false
	}
	rest = rest[:len(rest)-1]
	if q := rest[0]; (q == '\'' || q == '"') && rest[len(rest)-1] == q && len(rest) >= 2 {
		return rest[1 : len(rest)-1], true
	}
	return "", false
}

func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, strconv.Quote(m[k]))
	}
	return b.String()
}

// ResourceValue is the value of a resourceFieldRef of container c (the
// ref's own container name, when set, wins). node is the node's allocatable,
// the value of a limit the container does not set.
func ResourceValue(pod *v1.Pod, c *v1.Container, ref *v1.ResourceFieldSelector, node v1.ResourceList) (string, error) {
	if ref.ContainerName != "" && (c == nil || ref.ContainerName != c.Name) {
		c = findContainer(pod, ref.ContainerName)
	}
	if c == nil {
		return "", fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)
	}
	kind, resName, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("unsupported resourceFieldRef resource %q", ref.Resource)
	}
	name := v1.ResourceName(resName)
	switch name {
	case v1.ResourceCPU, v1.ResourceMemory, v1.ResourceEphemeralStorage:
	default:
		if !strings.HasPrefix(resName, "hugepages-") {
			return "", fmt.Errorf("unsupported resourceFieldRef resource %q", ref.Resource)
		}
	}
	q, found := c.Resources.Limits[name]
	if kind == "limits" && !found {
		q, found = node[name]
	}
	if kind == "requests" {
		if r, ok := c.Resources.Requests[name]; ok {
			q, found = r, true
		}
	}
	if !found {
		return "0", nil
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if name == v1.ResourceCPU {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

func findContainer(pod *v1.Pod, name string) *v1.Container {
	for _, list := range [][]v1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

// NodeAllocatable stands in for the node's allocatable CPU and memory
// (the kubelet reads them from its node status; peapod has none).
func NodeAllocatable() v1.ResourceList {
	rl := v1.ResourceList{v1.ResourceCPU: *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI)}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					rl[v1.ResourceMemory] = *resource.NewQuantity(kb*1024, resource.BinarySI)
				}
			}
		}
	}
	return rl
}
