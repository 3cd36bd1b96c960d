package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"peapod/hack/containerdref"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const cgroupFS = "/sys/fs/cgroup"

// makeNodeNetwork creates the node's pod bridge with the node's address
// (the CNI bridge plugin finds it there and keeps it as the gateway) and,
// for the kubelet, its host changes (makeKubeletHost).
func (c *Cluster) makeNodeNetwork(context.Context) error {
	for _, args := range [][]string{
		{"link", "add", c.Bridge, "type", "bridge"},
		{"addr", "add", c.NodeIP + "/24", "dev", c.Bridge},
		{"link", "set", c.Bridge, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	if !c.kubeletNode() {
		// peapod-agent makes its cgroup root itself (Down removes it),
		// sets no sysctl and writes nothing outside its config's dirs:
		// nothing more to record.
		return c.save()
	}
	return c.makeKubeletHost()
}

// makeKubeletHost makes the kubelet's cgroup root in every hierarchy and
// records the host dirs it will create and the sysctls it will change.
func (c *Cluster) makeKubeletHost() error {
	if err := makeCgroupRoot(c.CgroupRoot); err != nil {
		return err
	}
	for _, d := range kubeletHostDirs {
		if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
			c.MadeHostDirs = append(c.MadeHostDirs, d)
		}
	}
	c.recordKubeletSysctls()
	return c.save()
}

// makeCgroupRoot makes a kubelet's cgroupRoot in every hierarchy (the
// kubelet refuses a root that is missing in one).
func makeCgroupRoot(root string) error {
	hier, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hier {
		dir := filepath.Join(h, root)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup root: %w", err)
		}
		if filepath.Base(h) == "cpuset" {
			// A new cpuset cgroup starts empty; no task can join it until
			// it has CPUs and memory nodes.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup root %s: %w", f, err)
				}
			}
		}
	}
	return nil
}

// recordKubeletSysctls records the values of the sysctls a kubelet
// rewrites at start, for Down to put back (the first record wins: with
// several kubelets, the value from before any of them ran).
func (c *Cluster) recordKubeletSysctls() {
	for _, s := range kubeletSysctls {
		if _, ok := c.Sysctls[s]; ok {
			continue
		}
		v, err := os.ReadFile(filepath.Join("/proc/sys", s))
		if err != nil {
			continue // not on this kernel: the kubelet skips it too
		}
		c.Sysctls[s] = strings.TrimSpace(string(v))
	}
}

// kubeletHostDirs are paths the kubelet writes whatever --root-dir and
// podLogsDir say: its device-plugin registration socket
// (/var/lib/kubelet/device-plugins/kubelet.sock) and the
// /var/log/containers/<pod>_<ns>_<container>-<id>.log symlinks.
var kubeletHostDirs = []string{"/var/lib/kubelet", "/var/log/containers"}

// cgroupHierarchies lists the mounted cgroup hierarchies (v1 controllers,
// named ones and a cgroup2 mount).
func cgroupHierarchies() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && (f[2] == "cgroup" || f[2] == "cgroup2") && strings.HasPrefix(f[1], cgroupFS) {
			out = append(out, f[1])
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup hierarchy mounted under " + cgroupFS)
	}
	return out, nil
}

func (c *Cluster) startRuntime(ctx context.Context) error {
	dir := filepath.Join(c.Dir, "runtime")
	sock := filepath.Join(dir, "cri.sock")
	c.RuntimeEndpoint = "unix://" + sock
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "peapod-cluster", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": %q, "gateway": %q}]], "dataDir": %q}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
`, c.Bridge, c.PodCIDR, c.NodeIP, filepath.Join(dir, "ipam"))
	if err := os.WriteFile(filepath.Join(c.Dir, "cni", "10-peapod-cluster.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	var comp *component
	var err error
	switch c.Runtime {
	case "peapod":
		comp, err = c.startPeapod(dir, sock)
	case "containerd", "containerd-debian":
		comp, err = c.startContainerd(dir, sock)
	default:
		return fmt.Errorf("unknown runtime %q (peapod, containerd or containerd-debian)", c.Runtime)
	}
	if err != nil {
		return err
	}
	if err := c.save(); err != nil {
		return err
	}
	return c.waitCRI(ctx, comp)
}

// waitCRI waits until the runtime answers Version on its socket.
func (c *Cluster) waitCRI(ctx context.Context, comp *component) error {
	return waitCRIAt(ctx, comp, c.RuntimeEndpoint)
}

// waitCRIAt waits until the runtime comp answers Version on endpoint.
func waitCRIAt(ctx context.Context, comp *component, endpoint string) error {
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if !comp.alive() {
			return fmt.Errorf("%s exited; its log ends:\n%s", comp.Name, tail(comp.Log, 20))
		}
		if last = criCall(ctx, endpoint, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient) error {
			_, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
			return err
		}); last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer on %s within 60s: %v", comp.Name, endpoint, last)
}

func (c *Cluster) startPeapod(dir, sock string) (*component, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "root = %q\nstate = %q\n", filepath.Join(dir, "root"), filepath.Join(dir, "run"))
	fmt.Fprintf(&b, "[cri]\nsocket = %q\n", sock)
	fmt.Fprintf(&b, "[http]\naddress = \"127.0.0.1:0\"\n")
	fmt.Fprintf(&b, "[cni]\nconf_dir = %q\n", filepath.Join(c.Dir, "cni"))
	fmt.Fprintf(&b, "[runtimes.runc]\npath = \"/usr/sbin/runc\"\nroot = %q\n", filepath.Join(dir, "run", "runc"))
	if runc := usernsRunc(); runc != "" {
		// hostUsers: false pods, through RuntimeClass handler runc-userns
		// (README.md, "User namespaces"); their unprivileged root walks to
		// the rootfs under the state dir.
		for _, d := range []string{c.Dir, dir} {
			if fi, err := os.Stat(d); err == nil {
				os.Chmod(d, fi.Mode().Perm()|0o011)
			}
		}
		fmt.Fprintf(&b, "[runtimes.runc-userns]\npath = %q\nroot = %q\n", runc, filepath.Join(dir, "run", "runc-userns"))
	}
	fmt.Fprintf(&b, "[agent]\nenabled = false\n")
	for _, h := range mirroredHosts {
		fmt.Fprintf(&b, "[registry.mirrors.%q]\nendpoints = [\"http://%s\"]\n", h, c.Registry)
	}
	conf := filepath.Join(dir, "peapod.toml")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	return c.start("peapod", filepath.Join(c.Repo, "bin", "peapod"), []string{"serve", "--config", conf}, nil)
}

// usernsRuncVersion is hack/runc.sh's RUNC_VERSION.
const usernsRuncVersion = "v1.5.3"

// usernsRunc is the runc hack/runc.sh (make runc) builds, which can run
// pods in user namespaces; "" when it is not built.
func usernsRunc() string {
	cache := os.Getenv("PEAPOD_CACHE")
	if cache == "" {
		cache = "/var/cache/peapod"
	}
	p := filepath.Join(cache, "runc-"+usernsRuncVersion, "bin", "runc")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// mirroredHosts are the registries whose names the tests' images carry;
// the node's runtime sends each to the local registry and never upstream.
var mirroredHosts = []string{"registry.k8s.io", "gcr.io", "docker.io", "public.ecr.aws"}

// startContainerd runs a reference containerd as the node's runtime, for
// reference runs of the same tests: the current release from the cache
// ("containerd") or Debian's 1.6 ("containerd-debian"), configured as
// everywhere else here (hack/containerdref).
func (c *Cluster) startContainerd(dir, sock string) (*component, error) {
	var in containerdref.Install
	var err error
	if c.Runtime == "containerd-debian" {
		in, err = containerdref.Debian()
	} else {
		in, err = containerdref.Current()
	}
	if err != nil {
		return nil, err
	}
	conf, err := in.Write(containerdref.Options{
		Dir: dir, Socket: sock, CNIConfDir: filepath.Join(c.Dir, "cni"),
		Registry: c.Registry, Mirrored: mirroredHosts,
	})
	if err != nil {
		return nil, err
	}
	for _, d := range in.HostDirs(dir) {
		if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
			c.MadeHostDirs = append(c.MadeHostDirs, d)
		}
	}
	cmd := in.Command(conf)
	c.logf("node runtime: %s", in.Name)
	return c.start("containerd", cmd.Path, cmd.Args[1:], cmd.Env[len(cmd.Env)-1:])
}

func criCall(ctx context.Context, endpoint string, fn func(context.Context, runtimeapi.RuntimeServiceClient) error) error {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return fn(ctx, runtimeapi.NewRuntimeServiceClient(conn))
}

// kubeletNode says whether the node agent is the kubelet (also for a
// cluster.json written before Node was recorded).
func (c *Cluster) kubeletNode() bool { return c.Node == "" || c.Node == NodeKubelet }

// nodeComponent is the node agent's process: the kubelet or peapod-agent.
func (c *Cluster) nodeComponent() *component {
	if c.kubeletNode() {
		return c.component("kubelet")
	}
	return c.component(c.Node)
}

// startNode starts the node agent. Readiness is waitNodeReady's: the
// node's Ready condition in the API server.
func (c *Cluster) startNode(ctx context.Context) error {
	if c.kubeletNode() {
		return c.startKubelet(ctx)
	}
	return c.startPeapodAgent(ctx)
}

func (c *Cluster) startKubelet(ctx context.Context) error {
	kdir := filepath.Join(c.Dir, "kubelet")
	config := kubeletConfig{
		address: c.NodeIP, port: c.Ports.Kubelet, healthzAddress: "127.0.0.1", healthzPort: c.Ports.KubeletHealthz,
		clientCA: c.pki("ca.crt"), cert: c.pki("kubelet-serving.crt"), key: c.pki("kubelet-serving.key"),
		runtimeEndpoint: c.RuntimeEndpoint, cgroupRoot: c.CgroupRoot,
		podLogs: filepath.Join(c.Dir, "pod-logs"), volumePlugins: filepath.Join(c.Dir, "volume-plugins"),
		featureGates: c.opts.KubeletFeatureGates, extra: c.opts.KubeletExtraConfig,
	}
	args, err := config.write(kdir, filepath.Join(c.Dir, "kubelet.kubeconfig"), c.NodeName, c.NodeIP)
	if err != nil {
		return err
	}
	_, err = c.start("kubelet", filepath.Join(c.BinDir, "kubelet"), args, nil)
	return err
}

// kubeletConfig is what one kubelet's KubeletConfiguration says: the
// single node's (startKubelet) or a test host's (hosts.go).
type kubeletConfig struct {
	address, healthzAddress, clientCA, cert, key, runtimeEndpoint string
	cgroupRoot, podLogs, volumePlugins, staticPods, featureGates  string
	extra                                                         string
	port, healthzPort                                             int
}

func (k kubeletConfig) render() string {
	var static string
	if k.staticPods != "" {
		static = fmt.Sprintf("staticPodPath: %q\n", k.staticPods)
	}
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: %[2]d
readOnlyPort: 0
healthzBindAddress: %[13]s
healthzPort: %[3]d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[4]q}
authorization:
  mode: Webhook
tlsCertFile: %[5]q
tlsPrivateKeyFile: %[6]q
containerRuntimeEndpoint: %[7]q
imageServiceEndpoint: %[7]q
cgroupDriver: cgroupfs
cgroupRoot: %[8]q
# This machine kind has cgroup v1 (hybrid); kubelet 1.35+ refuses it unless told.
failCgroupV1: false
failSwapOn: false
podLogsDir: %[9]q
volumePluginDir: %[10]q
%[14]sclusterDomain: cluster.local
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
maxPods: 110
featureGates: {%[11]s}
%[12]s
`, k.address, k.port, k.healthzPort, k.clientCA, k.cert, k.key, k.runtimeEndpoint, k.cgroupRoot, k.podLogs,
		k.volumePlugins, featureGatesYAML(k.featureGates), k.extra, k.healthzAddress, static)
}

// write writes the config as dir/config.yaml and returns the kubelet's
// arguments: that config, root and cert dirs under dir, the node's name
// and address, and its kubeconfig.
func (k kubeletConfig) write(dir, kubeconfig, nodeName, nodeIP string) ([]string, error) {
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(k.render()), 0o644); err != nil {
		return nil, err
	}
	return []string{
		"--config=" + path,
		"--kubeconfig=" + kubeconfig,
		"--root-dir=" + filepath.Join(dir, "root"),
		"--cert-dir=" + filepath.Join(dir, "pki"),
		"--hostname-override=" + nodeName,
		"--node-ip=" + nodeIP,
		"--v=2",
	}, nil
}

func featureGatesYAML(gates string) string {
	var parts []string
	for _, g := range strings.Split(gates, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(g), "=")
		if !ok || name == "" {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %s", name, val))
	}
	return strings.Join(parts, ", ")
}

// KillRuntime kills the node's CRI runtime with SIGKILL (a crash, as a
// test wants it) and waits until it is gone.
func (c *Cluster) KillRuntime() error {
	return c.kill(c.runtimeComponent(), "runtime")
}

// RestartRuntime starts the node's runtime again with the arguments it had
// and waits until it answers on its socket.
func (c *Cluster) RestartRuntime(ctx context.Context) error {
	comp, err := c.restart(c.runtimeComponent(), "runtime")
	if err != nil {
		return err
	}
	return c.waitCRI(ctx, comp)
}

// KillNode kills the node agent (the kubelet or peapod-agent) with SIGKILL
// and waits until it is gone; its pods keep running in the runtime.
func (c *Cluster) KillNode() error {
	return c.kill(c.nodeComponent(), "node agent")
}

// RestartNode starts the node agent again with the arguments it had and
// waits until its health endpoint answers (the kubelet's healthz port,
// peapod-agent's /healthz on its --listen socket). The node's Ready
// condition is the caller's to wait for.
func (c *Cluster) RestartNode(ctx context.Context) error {
	comp, err := c.restart(c.nodeComponent(), "node agent")
	if err != nil {
		return err
	}
	return c.waitNodeHealthy(ctx, comp)
}

// kill sends SIGKILL to a recorded component and waits until it is gone.
func (c *Cluster) kill(p *component, what string) error {
	if p == nil || !p.alive() {
		return fmt.Errorf("%s not running", what)
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
		return err
	}
	for i := 0; i < 200 && p.alive(); i++ {
		time.Sleep(25 * time.Millisecond)
	}
	if p.alive() {
		return fmt.Errorf("%s (pid %d) survives SIGKILL", p.Name, p.PID)
	}
	return nil
}

// restart starts a dead component again with its recorded path and
// arguments, replacing its record.
func (c *Cluster) restart(p *component, what string) (*component, error) {
	if p == nil {
		return nil, fmt.Errorf("no %s recorded", what)
	}
	if p.alive() {
		return nil, fmt.Errorf("%s still runs (pid %d)", p.Name, p.PID)
	}
	var kept []*component
	for _, q := range c.Components {
		if q != p {
			kept = append(kept, q)
		}
	}
	c.Components = kept
	return c.start(p.Name, p.Path, p.Args, p.Env)
}

// stopRestart stops a running component (SIGTERM, SIGKILL after grace)
// and starts it again as restart does.
func (c *Cluster) stopRestart(p *component, grace time.Duration) (*component, error) {
	if err := p.stop(grace); err != nil {
		return nil, err
	}
	return c.restart(p, p.Name)
}

// waitNodeHealthy waits until the node agent's health endpoint answers.
func (c *Cluster) waitNodeHealthy(ctx context.Context, comp *component) error {
	if c.kubeletNode() {
		return c.waitHTTP(ctx, comp, fmt.Sprintf("http://127.0.0.1:%d/healthz", c.Ports.KubeletHealthz), nil, 60*time.Second)
	}
	return c.waitAgentHealthz(ctx, comp)
}

// RuntimeVersion asks the node's runtime for its name and version, as the
// kubelet does.
func (c *Cluster) RuntimeVersion(ctx context.Context) (name, version string, err error) {
	err = criCall(ctx, c.RuntimeEndpoint, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient) error {
		v, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
		if err == nil {
			name, version = v.RuntimeName, v.RuntimeVersion
		}
		return err
	})
	return name, version, err
}

// PodSandboxes lists the runtime's sandboxes: id by pod UID.
func (c *Cluster) PodSandboxes(ctx context.Context) (map[string][]string, error) {
	return podSandboxesAt(ctx, c.RuntimeEndpoint)
}

func podSandboxesAt(ctx context.Context, endpoint string) (map[string][]string, error) {
	return podSandboxesFiltered(ctx, endpoint, nil)
}

// podSandboxesFiltered is podSandboxesAt for the sandboxes filter selects.
func podSandboxesFiltered(ctx context.Context, endpoint string, filter *runtimeapi.PodSandboxFilter) (map[string][]string, error) {
	out := map[string][]string{}
	err := criCall(ctx, endpoint, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient) error {
		list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: filter})
		if err != nil {
			return err
		}
		for _, p := range list.Items {
			uid := p.GetMetadata().GetUid()
			out[uid] = append(out[uid], p.Id)
		}
		return nil
	})
	return out, err
}
