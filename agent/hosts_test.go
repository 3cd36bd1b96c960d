package agent

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

func TestHostsContent(t *testing.T) {
	override := "override.example.host"
	for _, tc := range []struct {
		name   string
		mod    func(p *v1.Pod)
		ips    []string
		want   []string // lines that must be there
		absent string
	}{
		{"pod network", func(p *v1.Pod) {}, []string{"10.0.0.5"},
			[]string{"# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "10.0.0.5\tweb"}, "HostAliases"},
		{"subdomain gives an FQDN", func(p *v1.Pod) { p.Spec.Hostname, p.Spec.Subdomain = "h", "sub" }, []string{"10.0.0.5"},
			[]string{"10.0.0.5\th.sub.default.svc.cluster.local\th"}, ""},
		{"hostnameOverride, no domain", func(p *v1.Pod) { p.Spec.HostnameOverride, p.Spec.Subdomain = &override, "sub" }, []string{"10.0.0.5"},
			[]string{"10.0.0.5\toverride.example.host"}, "svc.cluster.local"},
		{"host aliases", func(p *v1.Pod) {
			p.Spec.HostAliases = []v1.HostAlias{{IP: "123.45.67.89", Hostnames: []string{"foo.local", "bar.local"}}}
		}, []string{"10.0.0.5"}, []string{"# Entries added by HostAliases.", "123.45.67.89\tfoo.local\tbar.local"}, ""},
		{"host network keeps the node's file", func(p *v1.Pod) { p.Spec.HostNetwork = true }, nil,
			[]string{"# Kubernetes-managed hosts file (host network).", "192.168.1.1\tnode-entry"}, "ip6-allnodes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod(v1.RestartPolicyAlways, nil, "app")
			tc.mod(pod)
			host, domain := podHostDomain(pod, "cluster.local")
			got := string(hostsContent(pod, tc.ips, host, domain, []byte("192.168.1.1\tnode-entry\n")))
			for _, w := range tc.want {
				if !strings.Contains(got, w+"\n") {
					t.Errorf("missing %q in\n%s", w, got)
				}
			}
			if tc.absent != "" && strings.Contains(got, tc.absent) {
				t.Errorf("unexpected %q in\n%s", tc.absent, got)
			}
		})
	}
}
