// Package e2e drives a real `peapod serve` through its CRI socket, as
// crictl and the kubelet do: real runc, conmon, CNI bridge, overlayfs and a
// local registry. Each daemon gets its own root, state, socket, CNI conf,
// bridge and /24, so tests can run beside other packages' tests.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/hack/testenv"
)

var binDir string

func TestMain(m *testing.M) {
	if os.Getenv("PEAPOD_INTEGRATION") != "1" || os.Geteuid() != 0 {
		fmt.Println("e2e: skipped (needs root and PEAPOD_INTEGRATION=1)")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "peapod-e2e-bin")
	if err != nil {
		panic(err)
	}
	binDir = dir
	for _, b := range []struct{ out, pkg string }{{"peapod", "peapod/cmd/peapod"}, {"peapod-agent", "peapod/cmd/peapod-agent"}, {"peapod-pause", "peapod/cmd/peapod-pause"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	// The daemons' default cgroup parent, /peapod: removed at the end
	// when this run made it (and it is empty: each pod removed its own).
	parents, _ := filepath.Glob("/sys/fs/cgroup/*/peapod")
	code := m.Run()
	os.RemoveAll(dir)
	if len(parents) == 0 {
		made, _ := filepath.Glob("/sys/fs/cgroup/*/peapod")
		for _, p := range made {
			os.Remove(p)
		}
	}
	os.Exit(code)
}

func integration(t testing.TB) {
	t.Helper()
	if binDir == "" {
		t.Skip("needs root and PEAPOD_INTEGRATION=1")
	}
}

type daemonOpts struct {
	mirrors    map[string]string // upstream host -> endpoint
	cniBinDirs []string
	noCNIConf  bool
	// noDefaultCNIConf sets cni.default_conf = false: with noCNIConf the
	// conf dir stays empty until the test writes a config.
	noDefaultCNIConf bool
	// failpointControl wraps the bridge in the cni-failpoint test plugin
	// (its binary must be first in cniBinDirs).
	failpointControl string
	extraConfig      string
	// agentDisabled sets agent.enabled = false: a CRI runtime only.
	agentDisabled bool
	// root is the daemon's root (store, images, containers); empty:
	// <dir>/root. A test that needs the image store on a filesystem of
	// its own (image GC) mounts one and puts root there.
	root string
	// state is the daemon's state dir (bundles, conmon files, exit
	// files); empty: <dir>/run. A test that fills the state filesystem
	// (disk full) puts it on a filesystem of its own.
	state string
	// agentConfig is added to the [agent] table.
	agentConfig string
}

// daemon is one running `peapod serve` with its private dirs.
type daemon struct {
	t       testing.TB
	dir     string
	cfgPath string
	socket  string
	bridge  string
	subnet  string
	// cgroupRoot is the agent's cgroup_root, the daemon's own so that
	// parallel daemons' QoS trees and node limits stay apart.
	cgroupRoot string
	cmd        *exec.Cmd
	logPath    string
	// logStart is where the running daemon's part of the log begins.
	logStart int64
	conn     *grpc.ClientConn
	rt       runtimeapi.RuntimeServiceClient
	img      runtimeapi.ImageServiceClient
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// freeSubnet picks a 10.252.X.0/24 not routed on this host.
func freeSubnet(t testing.TB) string {
	out, _ := exec.Command("ip", "-4", "route").Output()
	for i := 0; i < 50; i++ {
		b := make([]byte, 1)
		rand.Read(b)
		s := fmt.Sprintf("10.252.%d.", b[0])
		if !strings.Contains(string(out), s) {
			return s + "0/24"
		}
	}
	t.Fatal("no free test subnet")
	return ""
}

func newDaemon(t testing.TB, o daemonOpts) *daemon {
	t.Helper()
	integration(t)
	dir, err := os.MkdirTemp("", "peapod-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, dir: dir, bridge: "ppe" + randHex(5)[:9], subnet: freeSubnet(t)}
	d.cgroupRoot = "/peapod-e2e-" + d.bridge
	d.socket = filepath.Join(dir, "run", "peapod.sock")
	d.cfgPath = filepath.Join(dir, "peapod.toml")
	d.logPath = filepath.Join(dir, "peapod.log")
	confDir := filepath.Join(dir, "cni")
	os.MkdirAll(confDir, 0o755)
	if !o.noCNIConf {
		var bridge any = map[string]any{
			"type": "bridge", "bridge": d.bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
			"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": d.subnet}}}, "dataDir": filepath.Join(dir, "ipam")},
		}
		if o.failpointControl != "" {
			bridge = map[string]any{"type": "cni-failpoint", "controlDir": o.failpointControl, "delegate": bridge}
		}
		conf, _ := json.Marshal(map[string]any{
			"cniVersion": "1.0.0",
			"name":       "peapod-e2e-" + d.bridge,
			"plugins":    []any{bridge, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}}},
		})
		if err := os.WriteFile(filepath.Join(confDir, "10-e2e.conflist"), conf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	binDirs := o.cniBinDirs
	if binDirs == nil {
		binDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}
	}
	root := filepath.Join(dir, "root")
	if o.root != "" {
		root = o.root
	}
	state := filepath.Join(dir, "run")
	if o.state != "" {
		state = o.state
	}
	var b strings.Builder
	fmt.Fprintf(&b, "root = %q\nstate = %q\n", root, state)
	fmt.Fprintf(&b, "[cri]\nsocket = %q\n[http]\naddress = \"127.0.0.1:0\"\n", d.socket)
	quoted := make([]string, len(binDirs))
	for i, bd := range binDirs {
		quoted[i] = fmt.Sprintf("%q", bd)
	}
	fmt.Fprintf(&b, "[cni]\nconf_dir = %q\nbin_dirs = [%s]\nbridge = %q\nsubnet = %q\n", confDir, strings.Join(quoted, ", "), d.bridge, d.subnet)
	if o.noDefaultCNIConf {
		b.WriteString("default_conf = false\n")
	}
	fmt.Fprintf(&b, "[runtimes.runc]\npath = \"/usr/sbin/runc\"\nroot = %q\n", filepath.Join(dir, "run", "runc"))
	fmt.Fprintf(&b, "[runtimes.crun]\npath = \"/usr/bin/crun\"\nroot = %q\n", filepath.Join(dir, "run", "crun"))
	fmt.Fprintf(&b, "[agent]\nmanifests_dir = %q\npod_logs_dir = %q\nvolume_plugin_dir = %q\n",
		filepath.Join(dir, "manifests"), filepath.Join(dir, "podlogs"), filepath.Join(dir, "volume-plugins"))
	fmt.Fprintf(&b, "cgroup_root = %q\n", d.cgroupRoot)
	if o.agentDisabled {
		b.WriteString("enabled = false\n")
	}
	b.WriteString(o.agentConfig)
	for host, ep := range o.mirrors {
		fmt.Fprintf(&b, "[registry.mirrors.%q]\nendpoints = [%q]\n", host, ep)
	}
	b.WriteString(o.extraConfig)
	if err := os.WriteFile(d.cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.cleanup)
	d.start()
	return d
}

func (d *daemon) start() {
	t := d.t
	t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := logf.Stat(); err == nil {
		d.logStart = fi.Size()
	}
	d.cmd = exec.Command(filepath.Join(binDir, "peapod"), "serve", "--config", d.cfgPath, "-v", "2")
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(d.socket); err == nil {
			conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err == nil {
				rt := runtimeapi.NewRuntimeServiceClient(conn)
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err = rt.Version(ctx, &runtimeapi.VersionRequest{})
				cancel()
				if err == nil {
					d.conn, d.rt, d.img = conn, rt, runtimeapi.NewImageServiceClient(conn)
					return
				}
				conn.Close()
			}
		}
		if d.cmd.ProcessState != nil || time.Now().After(deadline) {
			d.dumpLog()
			t.Fatal("peapod serve did not come up")
		}
		if err := d.cmd.Process.Signal(syscall.Signal(0)); err != nil {
			d.cmd.Wait()
			d.dumpLog()
			t.Fatal("peapod serve exited during start-up")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemon) dumpLog() {
	data, _ := os.ReadFile(d.logPath)
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	d.t.Logf("peapod log (tail):\n%s", data)
}

// kill9 kills the daemon the hard way, by the PID we started.
func (d *daemon) kill9() {
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Kill()
		d.cmd.Wait()
	}
	d.cmd = nil
}

// stop asks the daemon to exit with SIGTERM.
func (d *daemon) stop() {
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
	d.cmd = nil
}

// cleanup removes every pod through the CRI (which must leave nothing
// behind), stops the daemon, then sweeps what a failed test may have left.
func (d *daemon) cleanup() {
	t := d.t
	if t.Failed() || os.Getenv("PEAPOD_E2E_LOG") != "" {
		d.dumpLog()
	}
	if d.cmd == nil {
		d.start()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The agent owns pods of manifests: take the files away and let it
	// terminate them, so it does not recreate what is removed below.
	manifests := filepath.Join(d.dir, "manifests")
	if files, _ := os.ReadDir(manifests); len(files) > 0 {
		for _, f := range files {
			os.Remove(filepath.Join(manifests, f.Name()))
		}
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			resp, err := d.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
			if err != nil || len(resp.Items) == 0 {
				break
			}
		}
	}
	if resp, err := d.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
		for _, p := range resp.Items {
			if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				t.Errorf("cleanup: remove pod %s: %v", p.Id, err)
			}
		}
	}
	d.stop()
	exec.Command("ip", "link", "del", d.bridge).Run()
	for _, h := range hierarchies() {
		removeTree(filepath.Join("/sys/fs/cgroup", h, d.cgroupRoot))
	}
	// Sweep mounts below the test dir (none should remain), deepest first.
	if data, err := os.ReadFile("/proc/self/mounts"); err == nil {
		lines := strings.Split(string(data), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			f := strings.Fields(lines[i])
			if len(f) > 1 && strings.HasPrefix(f[1], d.dir) {
				t.Errorf("cleanup: mount left behind: %s", f[1])
				syscall.Unmount(f[1], syscall.MNT_DETACH)
			}
		}
	}
	os.RemoveAll(d.dir)
}

func (d *daemon) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	d.t.Cleanup(cancel)
	return ctx
}

// hostOnlyAddr is the registry address the tests use, loopback only.
func hostOnlyAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && net.ParseIP(host).IsLoopback()
}

// startRegistry runs a local docker-registry with the test images pushed
// (see hack/testimages), on loopback, stopped by PID when the test ends.
func startRegistry(t testing.TB) string {
	t.Helper()
	integration(t)
	return testenv.Registry(t)
}
