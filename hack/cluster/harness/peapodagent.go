package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// startPeapodAgent starts bin/peapod-agent as the node (node mode: its
// config names the kubelet's kubeconfig). Everything it keeps is under
// <dir>/peapod-agent: its config, root (agent state, pod volumes), state
// and --listen socket, and the static pod manifests dir; pod logs go to
// <dir>/pod-logs as the kubelet's do. The flags say what the config does
// not: the runtime's CRI endpoint, the HTTP socket and the log level.
func (c *Cluster) startPeapodAgent(ctx context.Context) error {
	dir := filepath.Join(c.Dir, NodePeapodAgent)
	c.ManifestsDir = filepath.Join(dir, "manifests")
	if err := os.MkdirAll(c.ManifestsDir, 0o755); err != nil {
		return err
	}
	conf := filepath.Join(dir, "peapod-agent.toml")
	if err := os.WriteFile(conf, []byte(c.peapodAgentConfig(dir)), 0o644); err != nil {
		return err
	}
	comp, err := c.start(NodePeapodAgent, filepath.Join(c.Repo, "bin", "peapod-agent"), []string{
		"--config", conf,
		"--runtime-endpoint", c.RuntimeEndpoint,
		"--listen", c.agentSocket(),
		"--v=2",
	}, nil)
	if err != nil {
		return err
	}
	// A flag or config the agent refuses shows here, with its log, rather
	// than as a node that never turns Ready.
	return c.waitAgentHealthz(ctx, comp)
}

// peapodAgentConfig renders the agent's peapod.toml: the keys of the
// kubelet's config and flags that the agent has, with the same values.
// cluster_dns stays empty as the kubelet's clusterDNS does (no cluster DNS
// here: pods get the host's resolv.conf).
func (c *Cluster) peapodAgentConfig(dir string) string {
	return agentConfig{
		cluster: c.Dir, dir: dir, runtimeEndpoint: c.RuntimeEndpoint,
		kubeconfig: filepath.Join(c.Dir, "kubelet.kubeconfig"),
		nodeName:   c.NodeName, nodeIP: c.NodeIP, manifests: c.ManifestsDir,
		podLogs: filepath.Join(c.Dir, "pod-logs"), volumePlugins: filepath.Join(c.Dir, "volume-plugins"),
		cgroupRoot: c.CgroupRoot, extra: c.opts.AgentExtraConfig, port: c.Ports.Kubelet,
		cert: c.pki("kubelet-serving.crt"), key: c.pki("kubelet-serving.key"), clientCA: c.pki("ca.crt"),
	}.render()
}

// agentConfig is what one peapod-agent node's config says: the single
// node's (peapodAgentConfig) or a test host's (hosts.go).
type agentConfig struct {
	cluster, dir, runtimeEndpoint, kubeconfig, nodeName, nodeIP, manifests string
	podLogs, volumePlugins, cgroupRoot, extra, cert, key, clientCA         string
	port                                                                   int
}

func (a agentConfig) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# peapod-agent of the cluster in %s (hack/cluster/harness)\n", a.cluster)
	fmt.Fprintf(&b, "root = %q\nstate = %q\n", filepath.Join(a.dir, "root"), filepath.Join(a.dir, "run"))
	fmt.Fprintf(&b, "[cri]\nsocket = %q\n", strings.TrimPrefix(a.runtimeEndpoint, "unix://"))
	fmt.Fprintf(&b, "[agent]\n")
	fmt.Fprintf(&b, "kubeconfig = %q\n", a.kubeconfig)
	fmt.Fprintf(&b, "node_name = %q\nnode_ip = %q\n", a.nodeName, a.nodeIP)
	fmt.Fprintf(&b, "manifests_dir = %q\n", a.manifests)
	fmt.Fprintf(&b, "pod_logs_dir = %q\n", a.podLogs)
	fmt.Fprintf(&b, "volume_plugin_dir = %q\n", a.volumePlugins)
	fmt.Fprintf(&b, "max_pods = 110\ncluster_domain = \"cluster.local\"\n")
	fmt.Fprintf(&b, "cgroup_root = %q\n", a.cgroupRoot)
	b.WriteString(a.extra)
	if a.extra != "" && !strings.HasSuffix(a.extra, "\n") {
		b.WriteString("\n")
	}
	// The kubelet API where the kubelet's would be: the API server reaches
	// it at the node IP and the Node's advertised port, with the cluster
	// CA's kubelet-client certificate.
	fmt.Fprintf(&b, "listen = %q\n", net.JoinHostPort(a.nodeIP, strconv.Itoa(a.port)))
	fmt.Fprintf(&b, "tls_cert_file = %q\ntls_private_key_file = %q\nclient_ca_file = %q\n", a.cert, a.key, a.clientCA)
	return b.String()
}

func (c *Cluster) agentSocket() string {
	return filepath.Join(c.Dir, NodePeapodAgent, "agent.sock")
}

// waitAgentHealthz polls GET /healthz on the agent's unix socket.
func (c *Cluster) waitAgentHealthz(ctx context.Context, comp *component) error {
	return waitAgentHealthzAt(ctx, comp, c.agentSocket())
}

// waitAgentHealthzAt polls GET /healthz on agent comp's socket sock.
func waitAgentHealthzAt(ctx context.Context, comp *component, sock string) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	defer client.CloseIdleConnections()
	// The host part is a placeholder: the transport dials the socket.
	if err := pollHTTP(ctx, client, comp, "http://peapod-agent/healthz", 60*time.Second); err != nil {
		return fmt.Errorf("peapod-agent on %s: %w", sock, err)
	}
	return nil
}
