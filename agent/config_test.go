package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestContainerResources(t *testing.T) {
	rl := func(kv ...string) v1.ResourceList {
		l := v1.ResourceList{}
		for i := 0; i < len(kv); i += 2 {
			l[v1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
		return l
	}
	const gi = int64(1 << 30)
	for _, tc := range []struct {
		name          string
		req, lim      v1.ResourceList
		shares, quota int64
		period        int64
		mem, oom      int64
	}{
		{"best effort", nil, nil, 2, 0, 0, 0, 1000},
		{"guaranteed", rl("cpu", "500m", "memory", "128Mi"), rl("cpu", "500m", "memory", "128Mi"), 512, 50000, 100000, 128 << 20, -997},
		{"burstable request only", rl("cpu", "250m", "memory", "1Gi"), nil, 256, 0, 0, 0, 1000 - 1000/4},
		{"burstable tiny cpu limit", rl("cpu", "1m"), rl("cpu", "5m"), 2, 1000, 100000, 0, 999},
		{"huge request", rl("cpu", "300"), nil, 262144, 0, 0, 0, 999},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod(v1.RestartPolicyAlways, nil, "app")
			pod.Spec.Containers[0].Resources = v1.ResourceRequirements{Requests: tc.req, Limits: tc.lim}
			r := containerResources(pod, &pod.Spec.Containers[0], 4*gi)
			if r.CpuShares != tc.shares || r.CpuQuota != tc.quota || r.CpuPeriod != tc.period || r.MemoryLimitInBytes != tc.mem || r.OomScoreAdj != tc.oom {
				t.Errorf("got shares %d quota %d period %d mem %d oom %d", r.CpuShares, r.CpuQuota, r.CpuPeriod, r.MemoryLimitInBytes, r.OomScoreAdj)
			}
		})
	}
}

func TestSandboxConfig(t *testing.T) {
	pod := testPod(v1.RestartPolicyAlways, nil, "app")
	pod.Spec.Containers[0].Ports = []v1.ContainerPort{{ContainerPort: 80, HostPort: 8080, Protocol: v1.ProtocolTCP}, {ContainerPort: 53, Protocol: v1.ProtocolUDP}}
	pod.Spec.Hostname = "h"
	cfg, err := makeSandboxConfig(pod, 2, "/var/log/pods", dnsSettings{ResolvConf: "/nonexistent"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname != "h" || cfg.DnsConfig != nil || cfg.LogDirectory != "/var/log/pods/default_web_uid1" || cfg.Metadata.Attempt != 2 {
		t.Errorf("cfg %+v", cfg)
	}
	if len(cfg.PortMappings) != 1 || cfg.PortMappings[0].HostPort != 8080 || cfg.PortMappings[0].ContainerPort != 80 {
		t.Errorf("port mappings %v", cfg.PortMappings)
	}
	if ns := cfg.Linux.SecurityContext.NamespaceOptions; ns.Network != runtimeapi.NamespaceMode_POD || ns.Pid != runtimeapi.NamespaceMode_CONTAINER {
		t.Errorf("namespaces %v", ns)
	}

	pod.Spec.HostNetwork = true
	pod.Spec.DNSConfig = &v1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}, Searches: []string{"svc.local"}}
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 10.0.0.53\nsearch example.com\noptions ndots:2\n"), 0o644)
	cfg, _ = makeSandboxConfig(pod, 0, "/var/log/pods", dnsSettings{ResolvConf: resolv}, nil)
	if cfg.Hostname != "" || cfg.Linux.SecurityContext.NamespaceOptions.Network != runtimeapi.NamespaceMode_NODE {
		t.Errorf("hostNetwork: hostname %q ns %v", cfg.Hostname, cfg.Linux.SecurityContext.NamespaceOptions)
	}
	want := &runtimeapi.DNSConfig{Servers: []string{"10.0.0.53", "1.1.1.1"}, Searches: []string{"example.com", "svc.local"}, Options: []string{"ndots:2"}}
	if !reflect.DeepEqual(cfg.DnsConfig.Servers, want.Servers) || !reflect.DeepEqual(cfg.DnsConfig.Searches, want.Searches) || !reflect.DeepEqual(cfg.DnsConfig.Options, want.Options) {
		t.Errorf("dns %v", cfg.DnsConfig)
	}
	pod.Spec.DNSPolicy = v1.DNSNone
	cfg, _ = makeSandboxConfig(pod, 0, "/var/log/pods", dnsSettings{ResolvConf: resolv}, nil)
	if !reflect.DeepEqual(cfg.DnsConfig.Servers, []string{"1.1.1.1"}) {
		t.Errorf("dnsPolicy None: %v", cfg.DnsConfig)
	}
}

func TestContainerConfigSecurity(t *testing.T) {
	f, tr, uid0, uid1000 := false, true, int64(0), int64(1000)
	pod := testPod(v1.RestartPolicyAlways, nil, "app")
	pod.Spec.SecurityContext = &v1.PodSecurityContext{RunAsUser: &uid1000, SupplementalGroups: []int64{5}, FSGroup: &uid1000}
	c := &pod.Spec.Containers[0]
	c.SecurityContext = &v1.SecurityContext{AllowPrivilegeEscalation: &f, ReadOnlyRootFilesystem: &tr,
		Capabilities:   &v1.Capabilities{Add: []v1.Capability{"NET_ADMIN"}, Drop: []v1.Capability{"ALL"}},
		SeccompProfile: &v1.SeccompProfile{Type: v1.SeccompProfileTypeRuntimeDefault}}
	c.TTY, c.Stdin = true, true
	cfg, err := makeContainerConfig(pod, c, containerParams{Attempt: 3, ImageRef: "sha256:abc", TerminationMessageHostPath: "/x/msg"})
	if err != nil {
		t.Fatal(err)
	}
	sc := cfg.Linux.SecurityContext
	if !sc.NoNewPrivs || !sc.ReadonlyRootfs || sc.RunAsUser.GetValue() != 1000 || !reflect.DeepEqual(sc.SupplementalGroups, []int64{5, 1000}) ||
		sc.Capabilities.AddCapabilities[0] != "NET_ADMIN" || sc.Seccomp.ProfileType != runtimeapi.SecurityProfile_RuntimeDefault || len(sc.MaskedPaths) == 0 {
		t.Errorf("security context %+v", sc)
	}
	if cfg.LogPath != "app/3.log" || cfg.Metadata.Attempt != 3 || !cfg.Tty || !cfg.Stdin || cfg.Image.Image != "sha256:abc" || cfg.Image.UserSpecifiedImage != "busybox" {
		t.Errorf("config %+v", cfg)
	}
	if m := cfg.Mounts[len(cfg.Mounts)-1]; m.ContainerPath != "/dev/termination-log" || m.HostPath != "/x/msg" {
		t.Errorf("termination message mount %+v", m)
	}
	if cfg.Annotations[annotationRestartCount] != "3" || cfg.Annotations[annotationContainerHash] != containerHash(c) {
		t.Errorf("annotations %v", cfg.Annotations)
	}

	// runAsNonRoot against the image user.
	pod.Spec.SecurityContext = &v1.PodSecurityContext{RunAsNonRoot: &tr}
	for _, tc := range []struct {
		runAs   *int64
		imgUID  *int64
		imgUser string
		wantErr string
	}{
		{nil, &uid1000, "", ""},
		{nil, &uid0, "", "image will run as root"},
		{nil, nil, "www-data", "non-numeric user (www-data)"},
		{&uid0, &uid1000, "", "runAsUser breaks non-root policy"},
		{&uid1000, &uid0, "", ""},
	} {
		c.SecurityContext = &v1.SecurityContext{RunAsUser: tc.runAs}
		_, err := makeContainerConfig(pod, c, containerParams{ImageUID: tc.imgUID, ImageUser: tc.imgUser})
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("runAs %v image %v/%q: err %v, want %q", tc.runAs, tc.imgUID, tc.imgUser, err, tc.wantErr)
		}
	}
}

func TestClusterDNS(t *testing.T) {
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.0.0.53\nsearch example.com\noptions ndots:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cluster := dnsSettings{ResolvConf: resolv, ClusterDNS: []string{"10.96.0.10"}, ClusterDomain: "cluster.local"}
	podSearch := []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local", "example.com"}
	for _, tc := range []struct {
		name     string
		policy   v1.DNSPolicy
		hostNet  bool
		set      dnsSettings
		servers  []string
		searches []string
		options  []string
		isNil    bool
	}{
		{"ClusterFirst", v1.DNSClusterFirst, false, cluster, []string{"10.96.0.10"}, podSearch, []string{"ndots:5"}, false},
		{"ClusterFirst on the host network is Default", v1.DNSClusterFirst, true, cluster, nil, nil, nil, true},
		{"ClusterFirstWithHostNet", v1.DNSClusterFirstWithHostNet, true, cluster, []string{"10.96.0.10"}, podSearch, []string{"ndots:5"}, false},
		{"ClusterFirst without cluster DNS is Default", v1.DNSClusterFirst, false, dnsSettings{ResolvConf: resolv}, nil, nil, nil, true},
		{"Default", v1.DNSDefault, false, cluster, nil, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod(v1.RestartPolicyAlways, nil, "app")
			pod.Spec.DNSPolicy, pod.Spec.HostNetwork = tc.policy, tc.hostNet
			got, err := makeDNSConfig(pod, tc.set)
			if err != nil {
				t.Fatal(err)
			}
			if tc.isNil {
				if got != nil {
					t.Fatalf("got %v, want the node's resolv.conf (nil)", got)
				}
				return
			}
			if !reflect.DeepEqual(got.Servers, tc.servers) || !reflect.DeepEqual(got.Searches, tc.searches) || !reflect.DeepEqual(got.Options, tc.options) {
				t.Errorf("got %v", got)
			}
		})
	}
}
