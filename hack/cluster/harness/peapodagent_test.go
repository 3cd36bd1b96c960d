package harness

import (
	"path/filepath"
	"testing"

	"peapod/config"
)

// The agent's config must be one peapod-agent loads: every key known
// (config.Parse refuses unknown ones), paths inside the cluster dir.
func TestPeapodAgentConfig(t *testing.T) {
	dir := t.TempDir()
	c := &Cluster{Dir: dir, Node: NodePeapodAgent, NodeName: "n1", NodeIP: "10.120.0.1", Ports: Ports{Kubelet: 10250},
		RuntimeEndpoint: "unix://" + filepath.Join(dir, "runtime", "cri.sock"),
		ManifestsDir:    filepath.Join(dir, NodePeapodAgent, "manifests"), CgroupRoot: "/peapod-cluster-pk1",
		opts: Options{AgentExtraConfig: "system_reserved = { memory = \"1Gi\" }"}}
	cfg := config.Default()
	if err := config.Parse([]byte(c.peapodAgentConfig(filepath.Join(dir, NodePeapodAgent))), cfg); err != nil {
		t.Fatal(err)
	}
	a := cfg.Agent
	for name, tt := range map[string]struct{ got, want string }{
		"root":              {cfg.Root, filepath.Join(dir, NodePeapodAgent, "root")},
		"state":             {cfg.State, filepath.Join(dir, NodePeapodAgent, "run")},
		"cri.socket":        {cfg.CRI.Socket, filepath.Join(dir, "runtime", "cri.sock")},
		"kubeconfig":        {a.Kubeconfig, filepath.Join(dir, "kubelet.kubeconfig")},
		"node_name":         {a.NodeName, "n1"},
		"node_ip":           {a.NodeIP, "10.120.0.1"},
		"manifests_dir":     {a.ManifestsDir, c.ManifestsDir},
		"pod_logs_dir":      {a.PodLogsDir, filepath.Join(dir, "pod-logs")},
		"volume_plugin_dir": {a.VolumePluginDir, filepath.Join(dir, "volume-plugins")},
		"cluster_domain":    {a.ClusterDomain, "cluster.local"},
		"listen":            {a.Listen, "10.120.0.1:10250"},
		"tls_cert_file":     {a.TLSCertFile, filepath.Join(dir, "pki", "kubelet-serving.crt")},
		"client_ca_file":    {a.ClientCAFile, filepath.Join(dir, "pki", "ca.crt")},
		"cgroup_root":       {a.CgroupRoot, "/peapod-cluster-pk1"},
		"system_reserved":   {a.SystemReserved["memory"], "1Gi"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", name, tt.got, tt.want)
		}
	}
	if a.MaxPods != 110 || len(a.ClusterDNS) != 0 {
		t.Errorf("max_pods %d, cluster_dns %v", a.MaxPods, a.ClusterDNS)
	}
}
