package apiobjects

import (
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func svc(ns, name, ip string, ports ...v1.ServicePort) *v1.Service {
	return &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.ServiceSpec{ClusterIP: ip, Ports: ports}}
}

func TestServiceEnv(t *testing.T) {
	kubernetes := svc("default", "kubernetes", "10.96.0.1", v1.ServicePort{Name: "https", Port: 443, Protocol: v1.ProtocolTCP})
	kubernetesVars := map[string]string{
		"KUBERNETES_SERVICE_HOST":       "10.96.0.1",
		"KUBERNETES_SERVICE_PORT":       "443",
		"KUBERNETES_SERVICE_PORT_HTTPS": "443",
		"KUBERNETES_PORT":               "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP":       "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO": "tcp",
		"KUBERNETES_PORT_443_TCP_PORT":  "443",
		"KUBERNETES_PORT_443_TCP_ADDR":  "10.96.0.1",
	}
	with := func(m map[string]string, more map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for k, v := range more {
			out[k] = v
		}
		return out
	}
	web := svc("app", "my-web", "10.96.5.5",
		v1.ServicePort{Port: 80}, // unnamed first port, protocol left to its default
		v1.ServicePort{Name: "metrics-port", Port: 9090, Protocol: v1.ProtocolTCP},
		v1.ServicePort{Name: "dns", Port: 53, Protocol: v1.ProtocolUDP})
	webVars := map[string]string{
		"MY_WEB_SERVICE_HOST":              "10.96.5.5",
		"MY_WEB_SERVICE_PORT":              "80",
		"MY_WEB_SERVICE_PORT_METRICS_PORT": "9090",
		"MY_WEB_SERVICE_PORT_DNS":          "53",
		"MY_WEB_PORT":                      "tcp://10.96.5.5:80",
		"MY_WEB_PORT_80_TCP":               "tcp://10.96.5.5:80",
		"MY_WEB_PORT_80_TCP_PROTO":         "tcp",
		"MY_WEB_PORT_80_TCP_PORT":          "80",
		"MY_WEB_PORT_80_TCP_ADDR":          "10.96.5.5",
		"MY_WEB_PORT_9090_TCP":             "tcp://10.96.5.5:9090",
		"MY_WEB_PORT_9090_TCP_PROTO":       "tcp",
		"MY_WEB_PORT_9090_TCP_PORT":        "9090",
		"MY_WEB_PORT_9090_TCP_ADDR":        "10.96.5.5",
		"MY_WEB_PORT_53_UDP":               "udp://10.96.5.5:53",
		"MY_WEB_PORT_53_UDP_PROTO":         "udp",
		"MY_WEB_PORT_53_UDP_PORT":          "53",
		"MY_WEB_PORT_53_UDP_ADDR":          "10.96.5.5",
	}
	v6 := svc("app", "v6", "fd00::10", v1.ServicePort{Name: "http", Port: 8080, Protocol: v1.ProtocolSCTP})
	v6Vars := map[string]string{
		"V6_SERVICE_HOST":         "fd00::10",
		"V6_SERVICE_PORT":         "8080",
		"V6_SERVICE_PORT_HTTP":    "8080",
		"V6_PORT":                 "sctp://[fd00::10]:8080",
		"V6_PORT_8080_SCTP":       "sctp://[fd00::10]:8080",
		"V6_PORT_8080_SCTP_PROTO": "sctp",
		"V6_PORT_8080_SCTP_PORT":  "8080",
		"V6_PORT_8080_SCTP_ADDR":  "fd00::10",
	}
	headless := svc("app", "headless", v1.ClusterIPNone, v1.ServicePort{Port: 80})
	external := svc("app", "external", "", v1.ServicePort{Port: 80})
	other := svc("elsewhere", "db", "10.96.9.9", v1.ServicePort{Port: 5432})
	ownKubernetes := svc("app", "kubernetes", "10.96.7.7", v1.ServicePort{Port: 8443})

	cases := []struct {
		name      string
		services  []*v1.Service
		namespace string
		links     bool
		want      map[string]string
	}{
		{name: "no services", namespace: "app", links: true, want: map[string]string{}},
		{name: "master only", services: []*v1.Service{kubernetes}, namespace: "app", links: true, want: kubernetesVars},
		{name: "namespace services, named ports, udp, ipv6",
			services: []*v1.Service{web, kubernetes, v6}, namespace: "app", links: true,
			want: with(with(kubernetesVars, webVars), v6Vars)},
		{name: "links off: master only", services: []*v1.Service{web, kubernetes}, namespace: "app", links: false, want: kubernetesVars},
		{name: "headless, external and other namespaces skipped",
			services: []*v1.Service{headless, external, other, kubernetes}, namespace: "app", links: true, want: kubernetesVars},
		{name: "the master in its own namespace, links off", services: []*v1.Service{kubernetes}, namespace: "default", links: false, want: kubernetesVars},
		{name: "a namespace's own kubernetes wins, whatever the order",
			services: []*v1.Service{ownKubernetes, kubernetes}, namespace: "app", links: true,
			want: map[string]string{
				"KUBERNETES_SERVICE_HOST":        "10.96.7.7",
				"KUBERNETES_SERVICE_PORT":        "8443",
				"KUBERNETES_PORT":                "tcp://10.96.7.7:8443",
				"KUBERNETES_PORT_8443_TCP":       "tcp://10.96.7.7:8443",
				"KUBERNETES_PORT_8443_TCP_PROTO": "tcp",
				"KUBERNETES_PORT_8443_TCP_PORT":  "8443",
				"KUBERNETES_PORT_8443_TCP_ADDR":  "10.96.7.7",
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, order := range [][]*v1.Service{tc.services, reversed(tc.services)} {
				env := serviceEnv(order, tc.namespace, tc.links)
				got := map[string]string{}
				for i, e := range env {
					if i > 0 && env[i-1].Name >= e.Name {
						t.Errorf("not sorted or duplicated at %q", e.Name)
					}
					got[e.Name] = e.Value
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("serviceEnv = %v\nwant %v", got, tc.want)
				}
			}
		})
	}
}

func reversed(s []*v1.Service) []*v1.Service {
	out := make([]*v1.Service, len(s))
	for i := range s {
		out[len(s)-1-i] = s[i]
	}
	return out
}

func TestSlimService(t *testing.T) {
	full := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", UID: "u", ResourceVersion: "7",
			Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{…}"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: v1.ServiceSpec{ClusterIP: "10.0.0.1", Ports: []v1.ServicePort{{Port: 80}}, Selector: map[string]string{"a": "b"}},
	}
	got, err := slimService(full)
	if err != nil {
		t.Fatal(err)
	}
	want := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", UID: "u", ResourceVersion: "7"},
		Spec: v1.ServiceSpec{ClusterIP: "10.0.0.1", Ports: []v1.ServicePort{{Port: 80}}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("slimService = %+v", got)
	}
	if again, _ := slimService(got); !reflect.DeepEqual(again, want) {
		t.Error("slimService is not idempotent")
	}
	if o, _ := slimService("tombstone"); o != "tombstone" {
		t.Error("non-Service changed")
	}
}
