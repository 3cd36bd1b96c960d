package agent

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/internal/atomicfile"
)

// The kubelet's managed /etc/hosts (pkg/kubelet/kubelet_pods.go): the
// agent writes it per pod and mounts it into every container that does not
// mount /etc/hosts itself, so hostAliases and the pod's FQDN resolve.
const (
	managedHostsHeader            = "# Kubernetes-managed hosts file.\n"
	managedHostsHeaderHostNetwork = "# Kubernetes-managed hosts file (host network).\n"
)

// podHostDomain is the pod's hostname and domain, as the kubelet's
// GeneratePodHostNameAndDomain: hostnameOverride (no domain), else
// spec.hostname or the pod name, with <subdomain>.<ns>.svc.<cluster domain>
// when spec.subdomain is set.
func podHostDomain(pod *v1.Pod, clusterDomain string) (host, domain string) {
	if o := pod.Spec.HostnameOverride; o != nil && *o != "" {
		return truncateHostname(*o), ""
	}
	host = podHostname(pod)
	if sd := pod.Spec.Subdomain; sd != "" && clusterDomain != "" {
		domain = fmt.Sprintf("%s.%s.svc.%s", sd, pod.Namespace, clusterDomain)
	}
	return host, domain
}

// hostsContent is the managed hosts file of a pod: on the pod network the
// localhost lines and the pod's IPs with its names; on the host network the
// node's own file. hostAliases come last in both.
func hostsContent(pod *v1.Pod, podIPs []string, host, domain string, nodeHosts []byte) []byte {
	var b bytes.Buffer
	if pod.Spec.HostNetwork {
		b.WriteString(managedHostsHeaderHostNetwork)
		b.Write(nodeHosts)
	} else {
		b.WriteString(managedHostsHeader)
		b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
		b.WriteString("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
		for _, ip := range podIPs {
			if domain != "" {
				fmt.Fprintf(&b, "%s\t%s.%s\t%s\n", ip, host, domain, host)
			} else {
				fmt.Fprintf(&b, "%s\t%s\n", ip, host)
			}
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return b.Bytes()
}

// hostsMount writes the pod's managed hosts file and returns its mount, or
// nil when the container mounts /etc/hosts itself, the pod has no IP yet
// (off the host network), or the agent keeps no state dir.
func (w *worker) hostsMount(c *v1.Container, podIPs []string) (*runtimeapi.Mount, error) {
	pod := w.pod
	if w.a.o.StateDir == "" || (len(podIPs) == 0 && !pod.Spec.HostNetwork) {
		return nil, nil
	}
	for _, m := range c.VolumeMounts {
		if filepath.Clean(m.MountPath) == "/etc/hosts" {
			return nil, nil
		}
	}
	var nodeHosts []byte
	if pod.Spec.HostNetwork {
		b, err := os.ReadFile("/etc/hosts")
		if err != nil {
			return nil, fmt.Errorf("node /etc/hosts: %w", err)
		}
		nodeHosts = b
	}
	host, domain := podHostDomain(pod, w.a.o.ClusterDomain)
	path := filepath.Join(w.a.podDir(pod.UID), "etc-hosts")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(path, hostsContent(pod, podIPs, host, domain, nodeHosts), 0o644); err != nil {
		return nil, fmt.Errorf("pod hosts file: %w", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		return nil, err
	}
	return &runtimeapi.Mount{ContainerPath: "/etc/hosts", HostPath: path, SelinuxRelabel: true}, nil
}
