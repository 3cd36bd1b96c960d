package config

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr string
		check   func(t *testing.T, c *Config)
	}{
		{name: "empty keeps defaults", toml: "", check: func(t *testing.T, c *Config) {
			if c.CRI.Socket != "/run/peapod/peapod.sock" || c.HTTP.Address != "127.0.0.1:9315" || c.Image.StallTimeout.Duration != time.Minute {
				t.Fatalf("defaults changed: %+v", c)
			}
		}},
		{name: "mirror", toml: "[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"http://127.0.0.1:5000\"]\n", check: func(t *testing.T, c *Config) {
			if got := c.Registry.Mirrors["registry.k8s.io"].Endpoints; len(got) != 1 || got[0] != "http://127.0.0.1:5000" {
				t.Fatalf("mirror = %v", got)
			}
		}},
		{name: "override socket and stall", toml: "[cri]\nsocket = \"/tmp/x.sock\"\n[image]\nstall_timeout = \"30s\"\n", check: func(t *testing.T, c *Config) {
			if c.CRI.Socket != "/tmp/x.sock" || c.Image.StallTimeout.Duration != 30*time.Second || c.CRI.DefaultRuntime != "runc" {
				t.Fatalf("got %+v", c)
			}
		}},
		{name: "agent on by default, off on request", toml: "[agent]\nenabled = false\n", check: func(t *testing.T, c *Config) {
			if c.Agent.Enabled || Default().Agent.Enabled != true || c.Agent.ManifestsDir != "/etc/peapod/manifests" {
				t.Fatalf("agent = %+v", c.Agent)
			}
		}},
		{name: "agent enabled not a bool", toml: "[agent]\nenabled = \"no\"\n", wantErr: "enabled"},
		{name: "unknown top key", toml: "rooot = \"/x\"\n", wantErr: "unknown key rooot"},
		{name: "unknown nested key", toml: "[cri]\nsockett = \"/x\"\n", wantErr: "unknown key cri.sockett"},
		{name: "bad type", toml: "[cri]\nsocket = 5\n", wantErr: "socket"},
		{name: "relative root", toml: "root = \"var/lib\"\n", wantErr: "root:"},
		{name: "bad duration", toml: "[image]\nstall_timeout = \"soon\"\n", wantErr: "stall_timeout"},
		{name: "negative duration", toml: "[image]\nstall_timeout = \"-1s\"\n", wantErr: "image.stall_timeout"},
		{name: "runtime create timeout", toml: "[runtimes.runc]\npath = \"runc\"\ncreate_timeout = \"20s\"\n", check: func(t *testing.T, c *Config) {
			if c.Runtimes["runc"].CreateTimeout.Duration != 20*time.Second {
				t.Fatalf("runtimes = %+v", c.Runtimes)
			}
		}},
		{name: "negative create timeout", toml: "[runtimes.runc]\npath = \"runc\"\ncreate_timeout = \"-1s\"\n", wantErr: "runtimes.runc.create_timeout"},
		{name: "bad http address", toml: "[http]\naddress = \"nope\"\n", wantErr: "http.address"},
		{name: "unknown default runtime", toml: "[cri]\ndefault_runtime = \"kata\"\n", wantErr: "cri.default_runtime"},
		{name: "mirror without scheme", toml: "[registry.mirrors.\"docker.io\"]\nendpoints = [\"127.0.0.1:5000\"]\n", wantErr: "must start with http"},
		{name: "long bridge", toml: "[cni]\nbridge = \"a-very-long-bridge-name\"\n", wantErr: "cni.bridge"},
		{name: "node mode", toml: "[agent]\nkubeconfig = \"/etc/peapod/node.kubeconfig\"\nnode_ip = \"10.0.0.2\"\ncluster_dns = [\"10.96.0.10\"]\n", check: func(t *testing.T, c *Config) {
			if c.Agent.Kubeconfig != "/etc/peapod/node.kubeconfig" || c.Agent.MaxPods != 110 || c.Agent.ClusterDomain != "cluster.local" || c.Agent.ClusterDNS[0] != "10.96.0.10" {
				t.Fatalf("agent = %+v", c.Agent)
			}
		}},
		{name: "relative kubeconfig", toml: "[agent]\nkubeconfig = \"node.kubeconfig\"\n", wantErr: "agent.kubeconfig"},
		{name: "bad node ip", toml: "[agent]\nnode_ip = \"node-1\"\n", wantErr: "agent.node_ip"},
		{name: "zero max pods", toml: "[agent]\nmax_pods = 0\n", wantErr: "agent.max_pods"},
		{name: "bad cluster dns", toml: "[agent]\ncluster_dns = [\"kube-dns\"]\n", wantErr: "agent.cluster_dns"},
		{name: "kubelet API port 0", toml: "[agent]\nlisten = \"0.0.0.0:0\"\n", wantErr: "agent.listen"},
		{name: "cert without key", toml: "[agent]\ntls_cert_file = \"/etc/peapod/kubelet.crt\"\n", wantErr: "set both or neither"},
		{name: "relative client CA", toml: "[agent]\nclient_ca_file = \"ca.crt\"\n", wantErr: "agent.client_ca_file"},
		{name: "unterminated string before CRLF", toml: "\"\r\n", wantErr: "strings cannot contain newlines"},
		{name: "node resources", toml: "[agent]\nsystem_reserved = { memory = \"1Gi\", cpu = \"500m\" }\neviction_hard = { \"memory.available\" = \"200Mi\" }\n", check: func(t *testing.T, c *Config) {
			if c.Agent.SystemReserved["memory"] != "1Gi" || c.Agent.EvictionHard["memory.available"] != "200Mi" || c.Agent.EvictionHard["nodefs.available"] != "10%" {
				t.Fatalf("agent = %+v", c.Agent)
			}
		}},
		{name: "unknown reserved resource", toml: "[agent]\nkube_reserved = { gpu = \"1\" }\n", wantErr: "agent.kube_reserved: unknown resource \"gpu\""},
		{name: "bad reserved quantity", toml: "[agent]\nsystem_reserved = { memory = \"lots\" }\n", wantErr: "agent.system_reserved.memory"},
		{name: "relative cgroup root", toml: "[agent]\ncgroup_root = \"kube\"\n", wantErr: "agent.cgroup_root"},
		{name: "enforce system-reserved", toml: "[agent]\nenforce_node_allocatable = [\"pods\", \"system-reserved\"]\n", wantErr: "not supported"},
		{name: "image gc low above high", toml: "[agent]\nimage_gc_low_threshold_percent = 90\n", wantErr: "agent.image_gc_low_threshold_percent (90)"},
		{name: "unknown eviction signal", toml: "[agent]\neviction_hard = { \"memory.free\" = \"1Gi\" }\n", wantErr: "agent.eviction_hard: unknown signal \"memory.free\""},
		{name: "soft threshold without grace", toml: "[agent]\neviction_soft = { \"memory.available\" = \"1Gi\" }\n", wantErr: "agent.eviction_soft"},
		{name: "zero pod pids limit", toml: "[agent]\npod_pids_limit = 0\n", wantErr: "agent.pod_pids_limit"},
		{name: "bad subnet", toml: "[cni]\nsubnet = \"10.88.0.0\"\n", wantErr: "cni.subnet"},
		{name: "cni default conf on by default, off on request", toml: "[cni]\ndefault_conf = false\n", check: func(t *testing.T, c *Config) {
			if c.CNI.DefaultConf || !Default().CNI.DefaultConf || c.CNI.ConfDir != "/etc/cni/net.d" {
				t.Fatalf("cni = %+v", c.CNI)
			}
		}},
		{name: "cni default conf not a bool", toml: "[cni]\ndefault_conf = \"no\"\n", wantErr: "default_conf"},
		{name: "lxcfs auto by default", toml: "", check: func(t *testing.T, c *Config) {
			if c.Containers.LXCFS != "auto" || c.Containers.LXCFSDir != "/var/lib/lxcfs" {
				t.Fatalf("containers = %+v", c.Containers)
			}
		}},
		{name: "lxcfs off, own dir", toml: "[containers]\nlxcfs = \"off\"\nlxcfs_dir = \"/run/lxcfs\"\n", check: func(t *testing.T, c *Config) {
			if c.Containers.LXCFS != "off" || c.Containers.LXCFSDir != "/run/lxcfs" {
				t.Fatalf("containers = %+v", c.Containers)
			}
		}},
		{name: "lxcfs on", toml: "[containers]\nlxcfs = \"on\"\n", check: func(t *testing.T, c *Config) {
			if c.Containers.LXCFS != "on" {
				t.Fatalf("containers = %+v", c.Containers)
			}
		}},
		{name: "lxcfs bool", toml: "[containers]\nlxcfs = true\n", wantErr: "lxcfs"},
		{name: "lxcfs unknown mode", toml: "[containers]\nlxcfs = \"yes\"\n", wantErr: `containers.lxcfs: "yes" must be one of auto, on, off`},
		{name: "lxcfs relative dir", toml: "[containers]\nlxcfs_dir = \"var/lib/lxcfs\"\n", wantErr: "containers.lxcfs_dir"},
		{name: "lxcfs empty dir", toml: "[containers]\nlxcfs_dir = \"\"\n", wantErr: "containers.lxcfs_dir"},
		{name: "unknown containers key", toml: "[containers]\nlxcfs_mode = \"on\"\n", wantErr: "unknown key containers.lxcfs_mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			err := Parse([]byte(tt.toml), c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// The rendered default must parse back to the defaults: the printed file
// is documentation that cannot drift.
func TestRenderRoundTrip(t *testing.T) {
	out, err := Render(Default())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"root = ", "[cri]", "socket = \"/run/peapod/peapod.sock\"", "[http]", "[cni]", "default_conf = true", "[agent]", "manifests_dir", "stall_timeout = \"1m0s\"", "[containers]", "lxcfs = \"auto\"", "lxcfs_dir = \"/var/lib/lxcfs\""} {
		if !strings.Contains(string(out), key) {
			t.Errorf("default config lacks %q:\n%s", key, out)
		}
	}
	c := Default()
	if err := Parse(out, c); err != nil {
		t.Fatalf("rendered default does not parse: %v\n%s", err, out)
	}
	if c.Root != "/var/lib/peapod" || c.Agent.ManifestsDir != "/etc/peapod/manifests" {
		t.Fatalf("round trip changed values: %+v", c)
	}
}
