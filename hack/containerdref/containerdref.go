// Package containerdref runs containerd as the reference runtime that
// peapod's benchmarks, conformance runs and cluster harness compare
// against: which containerd (Debian's 1.6 or the current release built
// into the version-keyed cache), and the config that keeps every socket,
// state dir and registry lookup of it inside one scratch dir.
//
// hack/bench, hack/cluster/harness and hack/conformance/run.sh (through
// `go run ./hack/containerdref`) all write their containerd config here,
// so the reference is configured the same way wherever it is measured.
package containerdref

import (
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// CurrentVersion is the containerd release the targets are judged against;
// hack/cluster/build.sh containerd builds it ($CONTAINERD_VERSION).
const CurrentVersion = "v2.4.2"

// Install is one containerd on this machine.
type Install struct {
	// Name is how tables and logs call it: "containerd-2.4.2".
	Name string
	// Version as the binary reports it, without the leading v.
	Version string
	Bin     string // containerd
	// ShimDir holds the containerd-shim-runc-v2 this containerd must
	// start: containerd looks the shim up in $PATH, so a 2.x daemon with
	// Debian's 1.6 shim first in PATH would measure the wrong shim.
	ShimDir string
	// Major is 1 or 2: it picks the config layout.
	Major int
}

// Debian is Debian's packaged containerd (1.6.20 on this machine kind).
func Debian() (Install, error) {
	return probe("/usr/bin/containerd", "/usr/bin")
}

// Current is containerd CurrentVersion (or $CONTAINERD_VERSION) from the
// cache hack/cluster/build.sh fills ($PEAPOD_CACHE, /var/cache/peapod).
func Current() (Install, error) {
	dir := CacheBin()
	bin := filepath.Join(dir, "containerd")
	if _, err := os.Stat(filepath.Join(dir, "containerd-shim-runc-v2")); err != nil {
		return Install{}, fmt.Errorf("containerd %s is not built in %s: run hack/cluster/build.sh containerd (make containerd does)", version(), dir)
	}
	return probe(bin, dir)
}

// CacheBin is where the current containerd's binaries live.
func CacheBin() string {
	cache := os.Getenv("PEAPOD_CACHE")
	if cache == "" {
		cache = "/var/cache/peapod"
	}
	return filepath.Join(cache, "containerd-"+version(), "bin")
}

func version() string {
	if v := os.Getenv("CONTAINERD_VERSION"); v != "" {
		return v
	}
	return CurrentVersion
}

// versionRE takes major.minor.patch, leaving Debian's "~ds1" and such.
var versionRE = regexp.MustCompile(`\bv?(\d+)\.(\d+)\.(\d+)`)

func probe(bin, shimDir string) (Install, error) {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return Install{}, fmt.Errorf("%s --version: %w", bin, err)
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return Install{}, fmt.Errorf("%s --version: no version in %q", bin, strings.TrimSpace(string(out)))
	}
	v := strings.TrimPrefix(m[0], "v")
	in := Install{Name: "containerd-" + v, Version: v, Bin: bin, ShimDir: shimDir}
	switch m[1] {
	case "1":
		in.Major = 1
	case "2":
		in.Major = 2
	default:
		return Install{}, fmt.Errorf("%s: containerd %s: only 1.x and 2.x configs are known here", bin, v)
	}
	return in, nil
}

// Options place one containerd. Every path it writes or listens on is
// under Dir except the CNI dirs the caller shares with peapod.
type Options struct {
	Dir          string   // root, state, sockets, runc root, certs.d, opt
	Socket       string   // CRI/containerd gRPC socket; default Dir/containerd.sock
	CNIConfDir   string   // the conf list the caller wrote (same as peapod's)
	CNIBinDir    string   // default /usr/lib/cni
	Runc         string   // default /usr/sbin/runc: every runtime on the same runc
	SandboxImage string   // default registry.k8s.io/pause:3.6
	Registry     string   // host:port of the local registry every pull goes to
	Mirrored     []string // registry host names sent to Registry; default docker.io, registry.k8s.io
	// StreamAddress is where exec/attach/port-forward streams listen;
	// default 127.0.0.1 (a random port).
	StreamAddress string
}

func (o *Options) defaults() {
	if o.Socket == "" {
		o.Socket = filepath.Join(o.Dir, "containerd.sock")
	}
	if o.CNIBinDir == "" {
		o.CNIBinDir = "/usr/lib/cni"
	}
	if o.Runc == "" {
		o.Runc = "/usr/sbin/runc"
	}
	if o.SandboxImage == "" {
		o.SandboxImage = "registry.k8s.io/pause:3.6"
	}
	if len(o.Mirrored) == 0 {
		o.Mirrored = []string{"docker.io", "registry.k8s.io"}
	}
	if o.StreamAddress == "" {
		o.StreamAddress = "127.0.0.1"
	}
}

// Write writes the config (and the registry hosts files) for in under
// o.Dir and returns the config's path.
func (in Install) Write(o Options) (string, error) {
	o.defaults()
	if o.Dir == "" || !filepath.IsAbs(o.Dir) {
		return "", fmt.Errorf("containerdref: Dir %q must be an absolute path", o.Dir)
	}
	if o.Registry == "" {
		return "", fmt.Errorf("containerdref: Registry is required (pulls must never leave the machine)")
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return "", err
	}
	if err := writeHosts(o); err != nil {
		return "", err
	}
	var conf string
	switch in.Major {
	case 1:
		conf = v1Config(o)
	case 2:
		conf = v2Config(o)
	default:
		return "", fmt.Errorf("containerdref: %s: unknown major version %d", in.Name, in.Major)
	}
	path := filepath.Join(o.Dir, "config.toml")
	return path, os.WriteFile(path, []byte(conf), 0o644)
}

// writeHosts fails every mirrored registry closed: its server and its only
// host are the local registry, so containerd never falls back to the real
// host name.
func writeHosts(o Options) error {
	for _, h := range o.Mirrored {
		hd := filepath.Join(o.Dir, "certs.d", h)
		if err := os.MkdirAll(hd, 0o755); err != nil {
			return err
		}
		hosts := fmt.Sprintf("server = \"http://%[1]s\"\n[host.\"http://%[1]s\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n", o.Registry)
		if err := os.WriteFile(filepath.Join(hd, "hosts.toml"), []byte(hosts), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// v1Config is containerd 1.6's config, version 2: one CRI plugin.
func v1Config(o Options) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[debug]
  address = "%[4]s/debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "%[4]s/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  stream_server_address = %[6]q
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "%[4]s/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = %[9]q
        Root = "%[4]s/runc"
        SystemdCgroup = false
`, filepath.Join(o.Dir, "root"), filepath.Join(o.Dir, "state"), o.Socket, o.Dir,
		o.SandboxImage, o.StreamAddress, o.CNIBinDir, o.CNIConfDir, o.Runc)
}

// v2Config is containerd 2.x's native config, version 4: the servers are
// plugins, the CRI runtime and image services are plugins of their own
// (io.containerd.cri.v1.runtime / .images) while the stream server stays
// under io.containerd.grpc.v1.cri. The shim socket dir, NRI's socket and
// the pods' network namespaces default to /run/containerd/s, /var/run/nri
// and /var/run/netns: each is moved into Dir.
func v2Config(o Options) string {
	return fmt.Sprintf(`version = 4
root = %[1]q
state = %[2]q
[plugins."io.containerd.server.v1.grpc"]
  address = %[3]q
[plugins."io.containerd.server.v1.ttrpc"]
  address = "%[3]s.ttrpc"
[plugins."io.containerd.server.v1.debug"]
  address = "%[4]s/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "%[4]s/opt"
[plugins."io.containerd.shim.v1.manager"]
  socket_dir = %[10]q
[plugins."io.containerd.nri.v1.nri"]
  socket_path = "%[4]s/nri.sock"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = %[6]q
  stream_server_port = "0"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %[5]q
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "%[4]s/certs.d"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%[7]q]
    conf_dir = %[8]q
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = %[9]q
        Root = "%[4]s/runc"
        SystemdCgroup = false
`, filepath.Join(o.Dir, "root"), filepath.Join(o.Dir, "state"), o.Socket, o.Dir,
		o.SandboxImage, o.StreamAddress, o.CNIBinDir, o.CNIConfDir, o.Runc, shimSocketDir(o.Dir))
}

// maxSocketDir is containerd 2's limit on the shim socket dir's length
// (the sockets' own names use up the rest of sun_path).
const maxSocketDir = 42

// shimSocketDir is Dir/s when that is short enough, else a short dir under
// /run named from Dir, which TrackHostDirs removes again.
func shimSocketDir(dir string) string {
	if d := filepath.Join(dir, "s"); len(d) <= maxSocketDir {
		return d
	}
	return fmt.Sprintf("/run/containerdref-%08x", crc32.ChecksumIEEE([]byte(dir)))
}

// Command is the daemon for a config Write returned: its own shim first in
// PATH. The caller sets stdout/stderr and starts it.
func (in Install) Command(config string) *exec.Cmd {
	cmd := exec.Command(in.Bin, "--config", config)
	cmd.Env = append(os.Environ(), "PATH="+in.ShimDir+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	return cmd
}

// HostDirs are directories outside Options.Dir this containerd creates:
// containerd 1.6 puts shim sockets in /run/containerd/s whatever its config
// says; 2.x's shim socket dir when Dir is too long for it. A caller that
// did not find them before starting it removes them (when empty) afterwards.
func (in Install) HostDirs(dir string) []string {
	if in.Major == 1 {
		return []string{"/run/containerd/s", "/run/containerd/runc/k8s.io", "/run/containerd/runc", "/run/containerd"}
	}
	if d := shimSocketDir(dir); !strings.HasPrefix(d, dir+"/") {
		return []string{d}
	}
	return nil
}

// TrackHostDirs notes which of HostDirs(dir) do not exist yet; the
// returned func removes those (when empty) once the daemon stopped.
func (in Install) TrackHostDirs(dir string) func() {
	var made []string
	for _, d := range in.HostDirs(dir) {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			made = append(made, d)
		}
	}
	return func() {
		for _, d := range made {
			os.Remove(d)
		}
	}
}
