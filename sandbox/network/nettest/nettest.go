// Package nettest gives tests their own CNI world: conf dir, cache dir,
// netns dir, bridge name, /24 subnet in 10.250.0.0/16 and host-local data
// dir, all unique to the test, so packages can run their tests in parallel
// on one host. Cleanup deletes the bridge. Other packages' tests (sandbox/,
// cri/) use it too.
package nettest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
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
)

// EnvIntegration switches integration tests on when set to "1".
const EnvIntegration = "PEAPOD_INTEGRATION"

// Integration skips t unless PEAPOD_INTEGRATION=1 and the test runs as root.
func Integration(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvIntegration) != "1" {
		t.Skip("integration test: set " + EnvIntegration + "=1 (needs root, CNI plugins in /usr/lib/cni)")
	}
	if os.Geteuid() != 0 {
		t.Skip("integration test: needs root (netns, bridge, veth)")
	}
}

// Env is one test's network world.
type Env struct {
	Options network.Options
	Gateway net.IP     // first address of the subnet: the bridge's
	Subnet  *net.IPNet // Options.Subnet parsed
}

// New returns options unique to t, on the real plugin dirs. The conf dir
// is empty, so network.New writes the default conflist for them.
func New(t testing.TB) *Env {
	t.Helper()
	dir := t.TempDir()
	octet := reserveSubnet(t)
	subnet := fmt.Sprintf("10.250.%d.0/24", octet)
	_, ipn, _ := net.ParseCIDR(subnet)
	e := &Env{
		Options: network.Options{
			ConfDir:     filepath.Join(dir, "net.d"),
			BinDirs:     network.DefaultBinDirs,
			CacheDir:    filepath.Join(dir, "cache"),
			NetNSDir:    filepath.Join(dir, "netns"),
			Bridge:      "ppt" + randHex(3),
			Subnet:      subnet,
			NetworkName: "peapod-test",
			IPAMDataDir: filepath.Join(dir, "ipam"),
		},
		Gateway: net.IPv4(10, 250, byte(octet), 1).To4(),
		Subnet:  ipn,
	}
	bridge := e.Options.Bridge
	t.Cleanup(func() { DeleteLink(t, bridge) })
	return e
}

// DeleteLink removes a link by name if it exists.
func DeleteLink(t testing.TB, name string) {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		return
	}
	if err := netlink.LinkDel(l); err != nil {
		t.Errorf("deleting link %s: %v", name, err)
	}
}

// IPAMFile is host-local's reservation file for ip.
func (e *Env) IPAMFile(ip net.IP) string {
	return filepath.Join(e.Options.IPAMDataDir, e.Options.NetworkName, ip.String())
}

// BridgeVeths returns the names of the links enslaved to the test bridge.
func (e *Env) BridgeVeths(t testing.TB) []string {
	t.Helper()
	br, err := netlink.LinkByName(e.Options.Bridge)
	if err != nil {
		return nil
	}
	links, err := linkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// WaitNoBridgeVeths waits up to timeout for the bridge to have no ports and
// returns those left.
func (e *Env) WaitNoBridgeVeths(t testing.TB, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		vs := e.BridgeVeths(t)
		if len(vs) == 0 || time.Now().After(deadline) {
			return vs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// linkList is netlink.LinkList, retried while other tests change links
// mid-dump (netlink.ErrDumpInterrupted).
func linkList() ([]netlink.Link, error) {
	for i := 0; ; i++ {
		links, err := netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == 20 {
			return links, err
		}
	}
}

// UseFailpoint builds cmd/cni-failpoint into a temp dir, puts that dir first
// in the bin dirs and writes a conflist whose bridge runs under the
// failpoint plugin. It returns the control dir for failpoint.Write. Call it
// before network.New.
func (e *Env) UseFailpoint(t testing.TB) string {
	t.Helper()
	binDir := BuildFailpoint(t)
	control := t.TempDir()
	def, err := network.DefaultConfList(e.Options)
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(def, &list); err != nil {
		t.Fatal(err)
	}
	plugins := list["plugins"].([]any)
	plugins[0] = map[string]any{"type": "cni-failpoint", "controlDir": control, "delegate": plugins[0]}
	data, _ := json.MarshalIndent(list, "", "  ")
	if err := os.MkdirAll(e.Options.ConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.Options.ConfDir, "10-failpoint.conflist"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	e.Options.BinDirs = append([]string{binDir}, e.Options.BinDirs...)
	return control
}

// BuildFailpoint builds the cni-failpoint plugin into a temp dir and
// returns the dir.
func BuildFailpoint(t testing.TB) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "..", "failpoint", "cmd", "cni-failpoint")
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "cni-failpoint"), ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building cni-failpoint: %v\n%s", err, out)
	}
	return dir
}

// reserveSubnet picks a free third octet for 10.250.X.0/24: one no route on
// the host uses, held by an flock on a lock file for the test's lifetime so
// parallel test processes never pick the same one.
func reserveSubnet(t testing.TB) int {
	t.Helper()
	for range 64 {
		n, _ := rand.Int(rand.Reader, big.NewInt(254))
		octet := int(n.Int64()) + 1
		if subnetInUse(octet) {
			continue
		}
		lock := filepath.Join(os.TempDir(), fmt.Sprintf("peapod-nettest-10.250.%d.lock", octet))
		f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				continue
			}
			t.Fatal(err)
		}
		// The holder removes the file when done; a lock taken on a file
		// already removed (or replaced) does not count.
		var fst, pst unix.Stat_t
		if unix.Fstat(int(f.Fd()), &fst) != nil || unix.Stat(lock, &pst) != nil || fst.Ino != pst.Ino {
			f.Close()
			continue
		}
		t.Cleanup(func() {
			_ = os.Remove(lock)
			f.Close()
		})
		return octet
	}
	t.Fatal("no free /24 in 10.250.0.0/16")
	return 0
}

func subnetInUse(octet int) bool {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	for i := 0; errors.Is(err, netlink.ErrDumpInterrupted) && i < 20; i++ {
		routes, err = netlink.RouteList(nil, netlink.FAMILY_V4)
	}
	if err != nil {
		return true // unknown: try another
	}
	probe := net.IPv4(10, 250, byte(octet), 1)
	for _, r := range routes {
		if r.Dst != nil && r.Dst.Contains(probe) && r.Dst.IP.To4() != nil {
			if ones, _ := r.Dst.Mask.Size(); ones > 0 {
				return true
			}
		}
	}
	return false
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// portmap's shared chains in the nat table, and the rules that jump to them.
var portmapChains = []string{"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"}

// CleanupPortmapChains makes tests that use hostPorts leave iptables as they
// found it. portmap deletes its per-pod chains on DEL but never its shared
// top-level chains (other pods, maybe other runtimes', use them). Every test
// that sets up hostPorts calls this first; it holds a shared flock for the
// test's lifetime. The chains are removed only by the last such test to
// finish (it gets the lock exclusively), only if a test created them (no
// chain existed when the first test started: a marker file records that),
// and only if no pod has a mapping in them.
func CleanupPortmapChains(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		return
	}
	lockPath := filepath.Join(os.TempDir(), "peapod-nettest-portmap.lock")
	marker := filepath.Join(os.TempDir(), "peapod-nettest-portmap.created")
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if !natChainExists(portmapChains[0]) {
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		defer f.Close()
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			return // another hostPort test runs; the last one cleans up
		}
		if _, err := os.Stat(marker); err != nil {
			return // the chains were there before any test
		}
		out, err := exec.Command("iptables", "-w", "-t", "nat", "-S", portmapChains[0]).Output()
		if err != nil || strings.Contains(string(out), "-A "+portmapChains[0]) {
			return // gone already, or some pod has a mapping
		}
		for _, jump := range [][]string{
			{"PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"},
			{"OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"},
			{"POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"},
		} {
			_ = exec.Command("iptables", append([]string{"-w", "-t", "nat", "-D"}, jump...)...).Run()
		}
		for _, c := range portmapChains {
			_ = exec.Command("iptables", "-w", "-t", "nat", "-F", c).Run()
			if out, err := exec.Command("iptables", "-w", "-t", "nat", "-X", c).CombinedOutput(); err != nil {
				t.Logf("removing nat chain %s: %v: %s", c, err, out)
			}
		}
		// The marker stays: a test that converted its lock to shared
		// (not atomic) may be about to recreate the chains, and its
		// cleanup must still remove them.
	})
}

func natChainExists(chain string) bool {
	return exec.Command("iptables", "-w", "-t", "nat", "-S", chain).Run() == nil
}
