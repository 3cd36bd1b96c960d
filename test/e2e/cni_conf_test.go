package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCNIConfFromOperator: peapod with cni.default_conf = false, as a node
// whose cluster network plugin (Flannel) owns the CNI conf dir. Until a
// config is there, NetworkReady is false with the reason and RunPodSandbox
// fails saying why, leaving nothing; the operator's conflist is used as soon
// as it appears, and a changed one (another subnet, network name and plugin
// chain) from the next pod on; all without restarting peapod. A pod made
// before the change is torn down with the config it was set up with.
func TestCNIConfFromOperator(t *testing.T) {
	integration(t)
	// The changed config's bridge. The bridge plugin refuses a bridge that
	// has another subnet's gateway address ("already has an IP address
	// different from"): a new subnet needs a new bridge (or the old one
	// deleted, as Flannel's users do when a node's pod CIDR changes).
	bridgeB := "ppf" + randHex(5)[:9]
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridgeB).Run() })
	d := newDaemon(t, daemonOpts{noCNIConf: true, noDefaultCNIConf: true, agentDisabled: true})
	pid := d.cmd.Process.Pid
	confDir := filepath.Join(d.dir, "cni")
	ipamDir := filepath.Join(d.dir, "ipam")

	// 1. No config: not ready, and peapod wrote none of its own.
	if ents, _ := os.ReadDir(confDir); len(ents) != 0 {
		t.Fatalf("conf dir holds %d files, want none (default_conf = false)", len(ents))
	}
	ready, cond, info := networkReady(t, d)
	wantMsg := "no CNI network config in " + confDir
	if ready || cond.Reason != "NetworkPluginNotReady" || !strings.Contains(cond.Message, wantMsg) {
		t.Fatalf("NetworkReady with an empty conf dir = %v, want false, NetworkPluginNotReady, %q", cond, wantMsg)
	}
	if !strings.Contains(info["lastCNILoadStatus"], wantMsg) {
		t.Errorf("crictl info lastCNILoadStatus = %q", info["lastCNILoadStatus"])
	}
	_, err := d.rt.RunPodSandbox(d.ctx(), &runtimeapi.RunPodSandboxRequest{Config: podConfig(d, "nonet")})
	if err == nil || !strings.Contains(err.Error(), "network not ready: "+wantMsg) {
		t.Fatalf("RunPodSandbox with no CNI config = %v, want network not ready: %s", err, wantMsg)
	}
	if left := leftovers(t, d); len(left) > 0 {
		t.Fatalf("the failed RunPodSandbox left %v", left)
	}

	// 2. The operator installs a conflist (temp file + rename, as
	// installers do): ready within seconds, pods get IPs from it.
	writeConf := func(c map[string]any, inPlace bool) {
		t.Helper()
		data, _ := json.MarshalIndent(c, "", "  ")
		path := filepath.Join(confDir, "10-operator.conflist")
		if inPlace {
			// Rewritten in place, as `cat > file` does.
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	writeConf(operatorConf("net-a", d.bridge, d.subnet, ipamDir), false)
	start := time.Now()
	for {
		if ready, cond, info = networkReady(t, d); ready {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("NetworkReady still false 5s after the conflist appeared: %v", cond)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("NetworkReady=true %v after the conflist appeared", time.Since(start).Round(time.Millisecond))
	if info["lastCNILoadStatus"] != `"OK"` || !strings.Contains(info["cniconfig"], "10-operator.conflist") {
		t.Errorf("crictl info: lastCNILoadStatus %s, cniconfig %s", info["lastCNILoadStatus"], info["cniconfig"])
	}
	podA, ipA := runPodIP(t, d, "net-a")
	if _, subnetA, _ := net.ParseCIDR(d.subnet); !subnetA.Contains(net.ParseIP(ipA)) {
		t.Fatalf("pod A got %s, want an address in %s", ipA, d.subnet)
	}

	// 3. The operator changes it: another subnet and network name, and a
	// longer chain (tuning sets a sysctl in the pod, bandwidth).
	subnetB := freeSubnet(t)
	for subnetB == d.subnet {
		subnetB = freeSubnet(t)
	}
	confB := operatorConf("net-b", bridgeB, subnetB, ipamDir)
	plugins := confB["plugins"].([]any)
	confB["plugins"] = append(plugins[:1:1],
		map[string]any{"type": "tuning", "sysctl": map[string]string{"net.ipv4.conf.eth0.arp_notify": "1"}},
		plugins[1],
		map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}})
	writeConf(confB, true)
	podB, ipB := runPodIP(t, d, "net-b")
	if _, sb, _ := net.ParseCIDR(subnetB); !sb.Contains(net.ParseIP(ipB)) {
		t.Fatalf("pod B got %s after the change, want an address in %s", ipB, subnetB)
	}
	if out, err := exec.Command("ip", "netns", "exec", "peapod-"+podB, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("tuning's sysctl in pod B: %q, %v", out, err)
	}
	if d.cmd == nil || d.cmd.Process.Pid != pid {
		t.Fatal("peapod was restarted")
	}

	// 4. Pod A goes back to the network it came from: its address is
	// freed in net-a's range, not looked for in net-b's.
	for _, id := range []string{podA, podB} {
		if _, err := d.rt.StopPodSandbox(d.ctx(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatalf("StopPodSandbox %s: %v", id, err)
		}
		if _, err := d.rt.RemovePodSandbox(d.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatalf("RemovePodSandbox %s: %v", id, err)
		}
	}
	for _, f := range []string{filepath.Join(ipamDir, "net-a", ipA), filepath.Join(ipamDir, "net-b", ipB)} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("IP still reserved after the pod was removed: %s (%v)", f, err)
		}
	}
	if left := leftovers(t, d); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// operatorConf is a conflist as a cluster network plugin would install it:
// a bridge with host-local IPAM and portmap.
func operatorConf(name, bridge, subnet, ipamDir string) map[string]any {
	return map[string]any{
		"cniVersion": "1.0.0",
		"name":       name,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": subnet}}}, "dataDir": ipamDir},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
}

// networkReady is the NetworkReady condition of a verbose Status, and its info.
func networkReady(t *testing.T, d *daemon) (bool, *runtimeapi.RuntimeCondition, map[string]string) {
	t.Helper()
	resp, err := d.rt.Status(d.ctx(), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Status.Conditions {
		if c.Type == runtimeapi.NetworkReady {
			return c.Status, c, resp.Info
		}
	}
	t.Fatal("Status reports no NetworkReady condition")
	return false, nil, nil
}

// runPodIP runs a pod sandbox and returns its id and IP, checked on eth0 in
// the pod's netns.
func runPodIP(t *testing.T, d *daemon, name string) (string, string) {
	t.Helper()
	resp, err := d.rt.RunPodSandbox(d.ctx(), &runtimeapi.RunPodSandboxRequest{Config: podConfig(d, name)})
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", name, err)
	}
	st, err := d.rt.PodSandboxStatus(d.ctx(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: resp.PodSandboxId})
	if err != nil {
		t.Fatal(err)
	}
	ip := st.GetStatus().GetNetwork().GetIp()
	out, err := exec.Command("ip", "-n", "peapod-"+resp.PodSandboxId, "-4", "-o", "addr", "show", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), " "+ip+"/") {
		t.Fatalf("pod %s: status IP %q, eth0 in its netns: %s (%v)", name, ip, out, err)
	}
	return resp.PodSandboxId, ip
}
