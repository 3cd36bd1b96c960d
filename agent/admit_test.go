package agent

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

func TestAdmit(t *testing.T) {
	node := &v1.Node{}
	node.Name = "n1"
	node.Labels = map[string]string{"kubernetes.io/hostname": "n1", "disk": "ssd"}
	node.Status.Allocatable = v1.ResourceList{
		v1.ResourceCPU: resource.MustParse("2"), v1.ResourceMemory: resource.MustParse("4Gi"), v1.ResourcePods: resource.MustParse("3"),
	}
	pod := func(uid, cpu, mem string) *v1.Pod {
		p := &v1.Pod{}
		p.UID, p.Name, p.Namespace = types.UID(uid), uid, "default"
		c := v1.Container{Name: "app", Resources: v1.ResourceRequirements{Requests: v1.ResourceList{}}}
		if cpu != "" {
			c.Resources.Requests[v1.ResourceCPU] = resource.MustParse(cpu)
		}
		if mem != "" {
			c.Resources.Requests[v1.ResourceMemory] = resource.MustParse(mem)
		}
		p.Spec.Containers = []v1.Container{c}
		return p
	}
	withPort := func(p *v1.Pod, ip string, port int32) *v1.Pod {
		p.Spec.Containers[0].Ports = []v1.ContainerPort{{ContainerPort: 80, HostPort: port, HostIP: ip}}
		return p
	}
	for _, tc := range []struct {
		name   string
		pod    *v1.Pod
		active []*v1.Pod
		taints []v1.Taint
		reason string // "" = admitted
		msg    string
	}{
		{"fits", pod("a", "1", "1Gi"), []*v1.Pod{pod("b", "500m", "1Gi")}, nil, "", ""},
		{"pod OS", func() *v1.Pod { p := pod("a", "", ""); p.Spec.OS = &v1.PodOS{Name: v1.Windows}; return p }(), nil, nil,
			"PodOSNotSupported", "the OS field doesn't match node OS"},
		{"unsafe sysctl", func() *v1.Pod {
			p := pod("a", "", "")
			p.Spec.SecurityContext = &v1.PodSecurityContext{Sysctls: []v1.Sysctl{{Name: "kernel.msgmax", Value: "10000000000"}}}
			return p
		}(), nil, nil, "SysctlForbidden", `forbidden sysctl: "kernel.msgmax" not allowlisted`},
		{"safe sysctl", func() *v1.Pod {
			p := pod("a", "", "")
			p.Spec.SecurityContext = &v1.PodSecurityContext{Sysctls: []v1.Sysctl{{Name: "net/ipv4/ip_local_port_range", Value: "1024 65535"}}}
			return p
		}(), nil, nil, "", ""},
		{"safe net sysctl on the host network", func() *v1.Pod {
			p := pod("a", "", "")
			p.Spec.HostNetwork = true
			p.Spec.SecurityContext = &v1.PodSecurityContext{Sysctls: []v1.Sysctl{{Name: "net.ipv4.tcp_syncookies", Value: "1"}}}
			return p
		}(), nil, nil, "SysctlForbidden", "not allowed with host net enabled"},
		{"pod OS label", func() *v1.Pod {
			p := pod("a", "", "")
			p.Labels = map[string]string{v1.LabelOSStable: "windows"}
			return p
		}(), nil, nil,
			"PodOSSelectorNodeLabelDoesNotMatch", "label doesn't match node label"},
		{"best effort fits", pod("a", "", ""), nil, nil, "", ""},
		{"out of cpu", pod("a", "1600m", ""), []*v1.Pod{pod("b", "500m", "")}, nil, "OutOfcpu", "cpu, requested: 1600, used: 500, capacity: 2000"},
		{"out of memory", pod("a", "", "3Gi"), []*v1.Pod{pod("b", "", "2Gi")}, nil, "OutOfmemory", "memory, requested: 3221225472"},
		{"out of pods", pod("a", "", ""), []*v1.Pod{pod("b", "", ""), pod("c", "", ""), pod("d", "", "")}, nil, "OutOfpods", "pods, requested: 1, used: 3, capacity: 3"},
		{"node selector", func() *v1.Pod {
			p := pod("a", "", "")
			p.Spec.NodeSelector = map[string]string{"disk": "hdd"}
			return p
		}(), nil, nil,
			"NodeAffinity", "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"},
		{"node selector matches", func() *v1.Pod {
			p := pod("a", "", "")
			p.Spec.NodeSelector = map[string]string{"disk": "ssd"}
			return p
		}(), nil, nil, "", ""},
		{"required affinity", func() *v1.Pod {
			p := pod("a", "", "")
			p.Spec.Affinity = &v1.Affinity{NodeAffinity: &v1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &v1.NodeSelector{
				NodeSelectorTerms: []v1.NodeSelectorTerm{{MatchExpressions: []v1.NodeSelectorRequirement{{Key: "disk", Operator: v1.NodeSelectorOpIn, Values: []string{"nvme"}}}}}}}}
			return p
		}(), nil, nil, "NodeAffinity", ""},
		{"host port taken", withPort(pod("a", "", ""), "", 8080), []*v1.Pod{withPort(pod("b", "", ""), "10.0.0.1", 8080)}, nil, "NodePorts", ""},
		{"host port other ip", withPort(pod("a", "", ""), "10.0.0.2", 8080), []*v1.Pod{withPort(pod("b", "", ""), "10.0.0.1", 8080)}, nil, "", ""},
		{"NoExecute taint not tolerated", pod("a", "", ""), nil, []v1.Taint{{Key: "k", Value: "v", Effect: v1.TaintEffectNoExecute}}, "TaintToleration", ""},
		{"NoSchedule taint is the scheduler's", pod("a", "", ""), nil, []v1.Taint{{Key: "k", Value: "v", Effect: v1.TaintEffectNoSchedule}}, "", ""},
		{"NoExecute taint tolerated", func() *v1.Pod {
			p := pod("a", "", "")
			p.Spec.Tolerations = []v1.Toleration{{Key: "k", Operator: v1.TolerationOpExists}}
			return p
		}(), nil, []v1.Taint{{Key: "k", Value: "v", Effect: v1.TaintEffectNoExecute}}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := node.DeepCopy()
			n.Spec.Taints = tc.taints
			r := admit(tc.pod, n, tc.active, 110)
			if tc.reason == "" {
				if !r.Admit {
					t.Fatalf("rejected: %+v", r)
				}
				return
			}
			if r.Admit || r.Reason != tc.reason || !strings.Contains(r.Message, tc.msg) || !strings.HasPrefix(r.Message, "Pod was rejected: ") {
				t.Fatalf("got %+v, want reason %s with %q", r, tc.reason, tc.msg)
			}
		})
	}
}
