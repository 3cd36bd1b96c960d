package network_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"peapod/sandbox/network"
	"peapod/sandbox/network/failpoint"
	"peapod/sandbox/network/nettest"
)

// world is one test's Manager on its own bridge and subnet.
type world struct {
	*nettest.Env
	m *network.Manager
}

func newWorld(t *testing.T, withFailpoint bool) (*world, string) {
	t.Helper()
	nettest.Integration(t)
	e := nettest.New(t)
	control := ""
	if withFailpoint {
		control = e.UseFailpoint(t)
	}
	m, err := network.New(e.Options)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	return &world{Env: e, m: m}, control
}

// pod makes a netns for a pod named name and removes it at cleanup.
func (w *world) pod(t *testing.T, name string) network.Pod {
	t.Helper()
	id := fmt.Sprintf("%s-%d", name, time.Now().UnixNano())
	path, err := w.m.NewNetNS(id)
	if err != nil {
		t.Fatal(err)
	}
	p := network.Pod{ID: id, Name: name, Namespace: "default", UID: "uid-" + id, NetNS: path}
	t.Cleanup(func() {
		// Teardown first so host-local and portmap state goes too; both
		// are idempotent.
		_ = w.m.Teardown(context.Background(), p)
		if err := w.m.RemoveNetNS(path); err != nil {
			t.Error(err)
		}
	})
	return p
}

func threadNetNS(t *testing.T) string {
	t.Helper()
	s, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// otherNSThreads lists threads of this process not in netns want.
func otherNSThreads(t *testing.T, want string) []string {
	t.Helper()
	tasks, _ := os.ReadDir("/proc/self/task")
	var out []string
	for _, task := range tasks {
		s, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err == nil && s != want {
			out = append(out, task.Name()+":"+s)
		}
	}
	return out
}

func TestNetNS(t *testing.T) {
	nettest.Integration(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	m, err := network.New(network.Options{ConfDir: t.TempDir(), CacheDir: t.TempDir(), NetNSDir: filepath.Join(t.TempDir(), "netns")})
	if err != nil {
		t.Fatal(err)
	}
	host := threadNetNS(t)
	path, err := m.NewNetNS("pod1")
	if err != nil {
		t.Fatal(err)
	}
	if got := threadNetNS(t); got != host {
		t.Fatalf("calling thread moved to %s (was %s)", got, host)
	}
	if other := otherNSThreads(t, host); len(other) > 0 {
		t.Errorf("threads left in another netns: %v", other)
	}
	if ok, err := network.IsNetNS(path); !ok {
		t.Fatalf("IsNetNS(%s): %v", path, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("net:[%d]", st.Ino) == host {
		t.Fatal("the pinned netns is the host's")
	}
	if _, err := m.NewNetNS("pod1"); err == nil {
		t.Error("NewNetNS with a taken name succeeded")
	}
	for _, bad := range []string{"", "a/b", ".."} {
		if _, err := m.NewNetNS(bad); err == nil {
			t.Errorf("NewNetNS(%q) succeeded", bad)
		}
	}
	// InNetNS runs inside it and comes back.
	var inside string
	if err := network.InNetNS(path, func() error {
		s, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		inside = s
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside != fmt.Sprintf("net:[%d]", st.Ino) {
		t.Errorf("InNetNS ran in %s, want net:[%d]", inside, st.Ino)
	}
	for i := range 2 { // idempotent
		if err := m.RemoveNetNS(path); err != nil {
			t.Fatalf("RemoveNetNS #%d: %v", i+1, err)
		}
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("pin still there: %v", err)
	}
	if got := threadNetNS(t); got != host {
		t.Fatalf("calling thread moved to %s", got)
	}
	if other := otherNSThreads(t, host); len(other) > 0 {
		t.Errorf("threads left in another netns: %v", other)
	}
}

func TestSetupTeardown(t *testing.T) {
	t.Parallel()
	w, _ := newWorld(t, false)
	ctx := context.Background()
	p := w.pod(t, "web")
	res, err := w.m.Setup(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || !w.Subnet.Contains(res.IPs[0]) || res.IPs[0].To4() == nil {
		t.Fatalf("IPs = %v, want one in %s", res.IPs, w.Subnet)
	}
	ip := res.IPs[0]
	if res.Network != "peapod-test" || res.Raw == nil {
		t.Errorf("result = %+v", res)
	}
	var sawEth0 bool
	for _, i := range res.Interfaces {
		if i.Name == "eth0" && i.Sandbox == p.NetNS {
			sawEth0 = true
		}
	}
	if !sawEth0 {
		t.Errorf("no eth0 in %s among %+v", p.NetNS, res.Interfaces)
	}
	if _, err := os.Stat(w.IPAMFile(ip)); err != nil {
		t.Errorf("host-local reservation: %v", err)
	}
	// Inside the pod: lo and eth0 up, the IP on eth0, default route via the bridge.
	err = network.InNetNS(p.NetNS, func() error {
		for _, name := range []string{"lo", "eth0"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if l.Attrs().Flags&net.FlagUp == 0 {
				return fmt.Errorf("%s is down", name)
			}
		}
		eth0, _ := netlink.LinkByName("eth0")
		addrs, err := netlink.AddrList(eth0, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || !addrs[0].IP.Equal(ip) {
			return fmt.Errorf("eth0 addresses %v, want %s", addrs, ip)
		}
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(w.Gateway) && r.LinkIndex == eth0.Attrs().Index {
				return nil
			}
		}
		return fmt.Errorf("no default route via %s in %v", w.Gateway, routes)
	})
	if err != nil {
		t.Fatal(err)
	}
	if vs := w.BridgeVeths(t); len(vs) != 1 {
		t.Errorf("bridge ports = %v, want one veth", vs)
	}
	if err := w.m.Check(ctx, p); err != nil {
		t.Errorf("Check: %v", err)
	}
	for i := range 2 {
		if err := w.m.Teardown(ctx, p); err != nil {
			t.Fatalf("Teardown #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(w.IPAMFile(ip)); !os.IsNotExist(err) {
		t.Errorf("IP %s still reserved after Teardown: %v", ip, err)
	}
	if vs := w.BridgeVeths(t); len(vs) != 0 {
		t.Errorf("veths left on the bridge: %v", vs)
	}
	err = network.InNetNS(p.NetNS, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			return fmt.Errorf("eth0 still in the pod netns")
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	// The pod can be set up again in the same netns (a restarted sandbox).
	if _, err := w.m.Setup(ctx, p); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
}

// The operator's config changes under running pods: the next pod gets the
// new network (another bridge, subnet and network name), and CHECK and DEL
// of a pod use the config its ADD used — its IP goes back to the old range,
// its veth off the old bridge — even once the dir holds no config at all.
func TestConfChangedUnderPods(t *testing.T) {
	t.Parallel()
	w, _ := newWorld(t, false)
	ctx := context.Background()
	a, b := w.pod(t, "a"), w.pod(t, "b")
	ra, err := w.m.Setup(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Subnet.Contains(ra.IPs[0]) {
		t.Fatalf("pod a: IP %s, want one in %s", ra.IPs[0], w.Subnet)
	}
	// The operator installs another network over peapod's conflist.
	e2 := nettest.New(t)
	e2.Options.NetworkName = "peapod-test-b"
	conf2, err := network.DefaultConfList(e2.Options)
	if err != nil {
		t.Fatal(err)
	}
	confFile := filepath.Join(w.Options.ConfDir, network.DefaultConfFile)
	if err := os.WriteFile(confFile+".new", conf2, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(confFile+".new", confFile); err != nil {
		t.Fatal(err)
	}
	if st := w.m.ConfStatus(); st.Err != nil || st.Network != "peapod-test-b" {
		t.Fatalf("ConfStatus after the change = %+v", st)
	}
	rb, err := w.m.Setup(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if rb.Network != "peapod-test-b" || !e2.Subnet.Contains(rb.IPs[0]) {
		t.Fatalf("pod b: network %s IP %s, want peapod-test-b in %s", rb.Network, rb.IPs[0], e2.Subnet)
	}
	if vs := e2.BridgeVeths(t); len(vs) != 1 {
		t.Errorf("new bridge ports = %v, want b's veth", vs)
	}
	if err := w.m.Check(ctx, a); err != nil {
		t.Errorf("Check of a (old network): %v", err)
	}
	if err := w.m.Teardown(ctx, a); err != nil {
		t.Fatalf("Teardown of a: %v", err)
	}
	if _, err := os.Stat(w.IPAMFile(ra.IPs[0])); !os.IsNotExist(err) {
		t.Errorf("a's IP %s still reserved in the old range: %v", ra.IPs[0], err)
	}
	if vs := w.BridgeVeths(t); len(vs) != 0 {
		t.Errorf("veths left on the old bridge: %v", vs)
	}
	// The operator removes the config: b is still torn down with its own.
	if err := os.Remove(confFile); err != nil {
		t.Fatal(err)
	}
	if err := w.m.Ready(); err == nil {
		t.Fatal("Ready with an empty conf dir = nil")
	}
	if err := w.m.Teardown(ctx, b); err != nil {
		t.Fatalf("Teardown of b with no config left: %v", err)
	}
	if _, err := os.Stat(e2.IPAMFile(rb.IPs[0])); !os.IsNotExist(err) {
		t.Errorf("b's IP %s still reserved: %v", rb.IPs[0], err)
	}
	if vs := e2.BridgeVeths(t); len(vs) != 0 {
		t.Errorf("veths left on the new bridge: %v", vs)
	}
}

// flannelCNIDir is where `hack/cluster/build.sh flannel` puts the flannel
// CNI meta plugin (PEAPOD_CACHE defaults to /var/cache/peapod).
func flannelCNIDir() string {
	cache := os.Getenv("PEAPOD_CACHE")
	if cache == "" {
		cache = "/var/cache/peapod"
	}
	return filepath.Join(cache, "flannel-v0.28.10", "cni")
}

// The flannel meta plugin (containernetworking/plugins v0.9.1) as Flannel's
// operators install it — kube-flannel's cni-conf.json: flannel delegating
// to bridge, then portmap — with the subnet.env flanneld would write for
// this node. peapod runs the chain as any other conflist.
func TestFlannelMetaPlugin(t *testing.T) {
	t.Parallel()
	nettest.Integration(t)
	pluginDir := flannelCNIDir()
	if _, err := os.Stat(filepath.Join(pluginDir, "flannel")); err != nil {
		t.Skipf("no flannel CNI plugin in %s: build it with `bash hack/cluster/build.sh flannel`", pluginDir)
	}
	e := nettest.New(t)
	dir := t.TempDir()
	subnetEnv := filepath.Join(dir, "subnet.env")
	env := fmt.Sprintf("FLANNEL_NETWORK=10.250.0.0/16\nFLANNEL_SUBNET=%s/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", e.Gateway)
	if err := os.WriteFile(subnetEnv, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	// cniVersion 0.3.1 as kube-flannel ships it: the v0.9.1 plugin speaks
	// CNI up to 0.4.0.
	conf := fmt.Sprintf(`{"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
  {"type": "flannel", "subnetFile": %q, "dataDir": %q, "ipam": {"dataDir": %q},
   "delegate": {"bridge": %q, "hairpinMode": true, "isDefaultGateway": true}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}`,
		subnetEnv, filepath.Join(dir, "flannel"), e.Options.IPAMDataDir, e.Options.Bridge)
	if err := os.MkdirAll(e.Options.ConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.Options.ConfDir, "10-flannel.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := e.Options
	opts.NoDefaultConf = true
	opts.BinDirs = append([]string{pluginDir}, opts.BinDirs...)
	m, err := network.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	w := &world{Env: e, m: m}
	ctx := context.Background()
	p := w.pod(t, "fl")
	res, err := m.Setup(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	ip := res.IPs[0]
	if res.Network != "cbr0" || !e.Subnet.Contains(ip) {
		t.Fatalf("network %s IP %s, want cbr0 in %s", res.Network, ip, e.Subnet)
	}
	// flanneld's MTU on eth0, its network routed via the bridge.
	err = network.InNetNS(p.NetNS, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if mtu := eth0.Attrs().MTU; mtu != 1450 {
			return fmt.Errorf("eth0 MTU %d, want FLANNEL_MTU 1450", mtu)
		}
		routes, err := netlink.RouteList(eth0, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == "10.250.0.0/16" && r.Gw.Equal(e.Gateway) {
				return nil
			}
		}
		return fmt.Errorf("no route to FLANNEL_NETWORK via %s in %v", e.Gateway, routes)
	})
	if err != nil {
		t.Error(err)
	}
	if err := m.Teardown(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.Options.IPAMDataDir, "cbr0", ip.String())); !os.IsNotExist(err) {
		t.Errorf("IP %s still reserved: %v", ip, err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "flannel")); len(left) > 0 {
		t.Errorf("flannel's scratch netconf left: %d files", len(left))
	}
}

// Two pods on the bridge reach each other over TCP.
func TestPodToPod(t *testing.T) {
	t.Parallel()
	w, _ := newWorld(t, false)
	ctx := context.Background()
	a, b := w.pod(t, "a"), w.pod(t, "b")
	ra, err := w.m.Setup(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := w.m.Setup(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if ra.IPs[0].Equal(rb.IPs[0]) {
		t.Fatalf("both pods got %s", ra.IPs[0])
	}
	var ln net.Listener
	if err := network.InNetNS(a.NetNS, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(ra.IPs[0].String(), "7777"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "hello from a\n")
	}()
	var got []byte
	if err := network.InNetNS(b.NetNS, func() error {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err = io.ReadAll(c)
		return err
	}); err != nil {
		t.Fatalf("b -> a: %v", err)
	}
	if string(got) != "hello from a\n" {
		t.Errorf("b read %q", got)
	}
}

// Teardown frees the IP however the netns went away first.
func TestTeardownWithoutNetNS(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(t *testing.T, m *network.Manager, p *network.Pod)
	}{
		{"netns removed", func(t *testing.T, m *network.Manager, p *network.Pod) {
			if err := m.RemoveNetNS(p.NetNS); err != nil {
				t.Fatal(err)
			}
		}},
		{"netns path empty", func(t *testing.T, m *network.Manager, p *network.Pod) {
			if err := m.RemoveNetNS(p.NetNS); err != nil {
				t.Fatal(err)
			}
			p.NetNS = ""
		}},
		{"pin unmounted, plain file left", func(t *testing.T, m *network.Manager, p *network.Pod) {
			if err := unix.Unmount(p.NetNS, unix.MNT_DETACH); err != nil {
				t.Fatal(err)
			}
		}},
	}
	t.Parallel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, _ := newWorld(t, false)
			ctx := context.Background()
			p := w.pod(t, "gone")
			res, err := w.m.Setup(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			orig := p.NetNS
			tt.breakIt(t, w.m, &p)
			for i := range 2 {
				if err := w.m.Teardown(ctx, p); err != nil {
					t.Fatalf("Teardown #%d: %v", i+1, err)
				}
			}
			if _, err := os.Stat(w.IPAMFile(res.IPs[0])); !os.IsNotExist(err) {
				t.Errorf("IP %s still reserved: %v", res.IPs[0], err)
			}
			// The kernel destroys a netns (and its veth end, and so the
			// pair) asynchronously after the last reference goes.
			if vs := w.WaitNoBridgeVeths(t, 5*time.Second); len(vs) != 0 {
				t.Errorf("veths left on the bridge: %v", vs)
			}
			_ = w.m.RemoveNetNS(orig)
		})
	}
}

func TestFailpointAddRollsBack(t *testing.T) {
	t.Parallel()
	w, control := newWorld(t, true)
	ctx := context.Background()
	p := w.pod(t, "addfail")
	if err := failpoint.Write(control, p.Name, failpoint.Control{CmdAdd: "1*error(oops)"}); err != nil {
		t.Fatal(err)
	}
	_, err := w.m.Setup(ctx, p)
	if err == nil || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("Setup = %v, want the failpoint's error", err)
	}
	t.Logf("Setup error: %v", err)
	if vs := w.BridgeVeths(t); len(vs) != 0 {
		t.Errorf("veths left after a failed ADD: %v", vs)
	}
	if ips := reserved(t, w); len(ips) != 0 {
		t.Errorf("IPs left reserved after a failed ADD: %v", ips)
	}
	if err := network.InNetNS(p.NetNS, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			return fmt.Errorf("eth0 left in the pod netns")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	// The failpoint is spent: the next Setup works.
	res, err := w.m.Setup(ctx, p)
	if err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	if !w.Subnet.Contains(res.IPs[0]) {
		t.Errorf("IP %s not in %s", res.IPs[0], w.Subnet)
	}
}

func TestFailpointDelOnce(t *testing.T) {
	t.Parallel()
	w, control := newWorld(t, true)
	ctx := context.Background()
	p := w.pod(t, "delfail")
	res, err := w.m.Setup(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := failpoint.Write(control, p.Name, failpoint.Control{CmdDel: "1*error(busy)", CmdCheck: "1*error(sick)"}); err != nil {
		t.Fatal(err)
	}
	if err := w.m.Check(ctx, p); err == nil || !strings.Contains(err.Error(), "sick") {
		t.Errorf("Check = %v, want the failpoint's error", err)
	}
	if err := w.m.Check(ctx, p); err != nil {
		t.Errorf("second Check: %v", err)
	}
	if err := w.m.Teardown(ctx, p); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("Teardown = %v, want the failpoint's error", err)
	}
	if _, err := os.Stat(w.IPAMFile(res.IPs[0])); err != nil {
		t.Errorf("IP freed though DEL failed: %v", err)
	}
	if err := w.m.Teardown(ctx, p); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	if _, err := os.Stat(w.IPAMFile(res.IPs[0])); !os.IsNotExist(err) {
		t.Errorf("IP %s still reserved: %v", res.IPs[0], err)
	}
	if vs := w.BridgeVeths(t); len(vs) != 0 {
		t.Errorf("veths left: %v", vs)
	}
}

// reserved lists host-local's reservation files (IP addresses).
func reserved(t *testing.T, w *world) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(w.Options.IPAMDataDir, w.Options.NetworkName))
	if err != nil {
		return nil
	}
	var ips []string
	for _, e := range ents {
		if net.ParseIP(e.Name()) != nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

func TestPortMapping(t *testing.T) {
	t.Parallel()
	nettest.Integration(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("iptables not installed: portmap cannot work, nothing to check")
	}
	nettest.CleanupPortmapChains(t)
	w, _ := newWorld(t, false)
	ctx := context.Background()
	p := w.pod(t, "hostport")
	hostPort := int32(20000 + time.Now().UnixNano()%10000)
	p.PortMappings = []network.PortMapping{{HostPort: hostPort, ContainerPort: 8080, Protocol: "tcp"}}
	res, err := w.m.Setup(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	rules := natRulesFor(t, p.ID)
	if len(rules) == 0 {
		t.Fatalf("no nat rules mention container %s", p.ID)
	}
	want := fmt.Sprintf("--dport %d", hostPort)
	if !strings.Contains(strings.Join(rules, "\n"), want) || !strings.Contains(strings.Join(rules, "\n"), res.IPs[0].String()+":8080") {
		t.Errorf("no DNAT of %s to %s:8080 in\n%s", want, res.IPs[0], strings.Join(rules, "\n"))
	}
	// Traffic: the host dials its own bridge address at hostPort; portmap's
	// OUTPUT DNAT sends it to the pod. Only the bridge and the pod see it.
	var ln net.Listener
	if err := network.InNetNS(p.NetNS, func() (err error) {
		ln, err = net.Listen("tcp4", ":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.WriteString(c, "pod\n")
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp4", net.JoinHostPort(w.Gateway.String(), fmt.Sprint(hostPort)), 5*time.Second)
	if err != nil {
		t.Errorf("dialing hostPort via %s: %v", w.Gateway, err)
	} else {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != "pod\n" {
			t.Errorf("hostPort answered %q", got)
		}
	}
	if err := w.m.Teardown(ctx, p); err != nil {
		t.Fatal(err)
	}
	if rules := natRulesFor(t, p.ID); len(rules) != 0 {
		t.Errorf("nat rules left after Teardown:\n%s", strings.Join(rules, "\n"))
	}
}

// natRulesFor returns the nat table rules portmap tagged with container id,
// plus the rules of the chains they jump to.
func natRulesFor(t *testing.T, id string) []string {
	t.Helper()
	out, err := exec.Command("iptables", "-w", "-t", "nat", "-S").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -t nat -S: %v\n%s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	chains := map[string]bool{}
	var rules []string
	for _, l := range lines {
		if strings.Contains(l, id) {
			rules = append(rules, l)
			if f := strings.Fields(l); len(f) > 0 {
				for i, x := range f {
					if x == "-j" && i+1 < len(f) && strings.HasPrefix(f[i+1], "CNI-") {
						chains[f[i+1]] = true
					}
				}
			}
		}
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) >= 2 && (f[0] == "-A" || f[0] == "-N") && chains[f[1]] && !strings.Contains(l, id) {
			rules = append(rules, l)
		}
	}
	return rules
}

// TestSetupTiming measures NewNetNS + Setup, and Teardown + RemoveNetNS.
func TestSetupTiming(t *testing.T) {
	w, _ := newWorld(t, false)
	ctx := context.Background()
	const n = 10
	var up, down, nsOnly time.Duration
	for i := range n {
		start := time.Now()
		path, err := w.m.NewNetNS(fmt.Sprintf("timing-%d-%d", i, time.Now().UnixNano()))
		nsOnly += time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		p := network.Pod{ID: filepath.Base(path), Name: fmt.Sprintf("t%d", i), Namespace: "default", UID: "u", NetNS: path}
		_, err = w.m.Setup(ctx, p)
		up += time.Since(start)
		if err != nil {
			_ = w.m.RemoveNetNS(path)
			t.Fatal(err)
		}
		start = time.Now()
		terr := w.m.Teardown(ctx, p)
		rerr := w.m.RemoveNetNS(path)
		down += time.Since(start)
		if terr != nil || rerr != nil {
			t.Fatal(terr, rerr)
		}
	}
	t.Logf("NewNetNS+Setup: %v avg (NewNetNS alone %v); Teardown+RemoveNetNS: %v avg (%d pods, sequential, first one creates the bridge)",
		up/n, nsOnly/n, down/n, n)
}
