package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const agentUsernsPod = `
apiVersion: v1
kind: Pod
metadata:
  name: NAME
spec:
  hostUsers: false
  runtimeClassName: runc-userns
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
`

// TestAgentUserNamespaces: the agent runs static pods with `hostUsers:
// false` (runtimeClassName runc-userns: in static mode the name is the
// handler) in user namespaces of their own, each on a block of 65536 host
// ids it allocates as the kubelet does: inside, /proc/self/uid_map maps 0
// to the block; on the host the container runs as the block's first id;
// two pods get different blocks. After the agent's kill -9 the pods are
// adopted with their blocks, which the agent reloads from its pod dirs:
// a new pod gets another block, though the search starts over. A removed
// pod's block file goes with it; `hostUsers: false` with hostNetwork is
// refused. Skips when the current runc is not built.
func TestAgentUserNamespaces(t *testing.T) {
	usernsRunc(t) // skips before Parallel
	t.Parallel()
	d := newUsernsDaemon(t)
	running := func(p *v1.Pod) bool { return p.Status.Phase == v1.PodRunning }
	for _, n := range []string{"userns-a", "userns-b"} {
		d.writeManifest(n+".yaml", strings.Replace(agentUsernsPod, "NAME", n, 1))
	}
	d.writeManifest("userns-hostnet.yaml", strings.Replace(agentUsernsPod, "NAME", "userns-hostnet", 1)+"  hostNetwork: true\n")

	// block checks pod name's user namespace from three sides and returns
	// its first host id and container id.
	block := func(name string) (uint32, string) {
		t.Helper()
		p := d.waitPod(name, 90*time.Second, "Running", running)
		cs := containerStatus(p, "main")
		_, cid, _ := strings.Cut(cs.ContainerID, "://")
		// The agent's file, in its pod dir.
		data, err := os.ReadFile(filepath.Join(d.dir, "root", "agent", "pods", string(p.UID), "userns"))
		if err != nil {
			t.Fatalf("pod %s: %v", name, err)
		}
		var f struct {
			UIDMappings []struct{ HostID, ContainerID, Length uint32 } `json:"uidMappings"`
		}
		if err := json.Unmarshal(data, &f); err != nil || len(f.UIDMappings) != 1 {
			t.Fatalf("pod %s: userns file %s: %v", name, data, err)
		}
		host := f.UIDMappings[0].HostID
		if host < 65536 || host%65536 != 0 || f.UIDMappings[0].Length != 65536 {
			t.Errorf("pod %s: block %d length %d", name, host, f.UIDMappings[0].Length)
		}
		// Inside: root is the block's first id.
		ex, err := d.rt.ExecSync(d.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"sh", "-c", "id -u; cat /proc/self/uid_map /proc/self/gid_map"}, Timeout: 10})
		re := regexp.MustCompile(fmt.Sprintf(`^0\n\s+0\s+%d\s+65536\n\s+0\s+%d\s+65536\n$`, host, host))
		if err != nil || ex.ExitCode != 0 || !re.Match(ex.Stdout) {
			t.Errorf("pod %s: in the container: %v, exit %d, %q %q; want uid 0 and `0 %d 65536`", name, err, ex.GetExitCode(), ex.GetStdout(), ex.GetStderr(), host)
		}
		// On the host: the container's process runs as it.
		v, err := d.rt.ContainerStatus(d.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: cid, Verbose: true})
		if err != nil {
			t.Fatal(err)
		}
		var info struct {
			Pid int `json:"pid"`
		}
		if err := json.Unmarshal([]byte(v.Info["info"]), &info); err != nil || info.Pid <= 0 {
			t.Fatalf("pod %s: container pid from %q: %v", name, v.Info["info"], err)
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.Pid))
		ids := fmt.Sprintf("%d\t%d\t%d\t%d", host, host, host, host)
		if !regexp.MustCompile(`(?m)^Uid:\t`+ids+`$`).Match(st) || !regexp.MustCompile(`(?m)^Gid:\t`+ids+`$`).Match(st) {
			t.Errorf("pod %s: container process on the host, want uid/gid %d:\n%s", name, host, st)
		}
		return host, cid
	}
	a, aCID := block("userns-a")
	b, bCID := block("userns-b")
	if a == b {
		t.Errorf("two pods share the block %d", a)
	}
	t.Logf("blocks: userns-a %d, userns-b %d", a, b)
	p := d.waitPod("userns-hostnet", 30*time.Second, "refused", func(p *v1.Pod) bool { return p.Status.Reason == "InvalidManifest" })
	if !strings.Contains(p.Status.Message, "spec.hostNetwork: Forbidden: when `hostUsers` is false") {
		t.Errorf("hostNetwork with hostUsers false: %q", p.Status.Message)
	}

	// kill -9 of the agent: peapod serve restarts it; it adopts the pods
	// with their blocks and gives a new pod another one.
	pid := d.agentPID()
	if pid == 0 {
		t.Fatal("no peapod-agent child of peapod serve")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if n := d.agentPID(); n != 0 && n != pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("peapod-agent not restarted within 20s of kill -9")
		}
	}
	d.writeManifest("userns-c.yaml", strings.Replace(agentUsernsPod, "NAME", "userns-c", 1))
	c, _ := block("userns-c")
	t.Logf("after the agent's restart: userns-c %d", c)
	if c == a || c == b {
		t.Errorf("pod userns-c got block %d, a live pod's (a %d, b %d)", c, a, b)
	}
	for _, x := range []struct {
		name, cid string
		host      uint32
	}{{"userns-a", aCID, a}, {"userns-b", bCID, b}} {
		host, cid := block(x.name)
		if host != x.host || cid != x.cid {
			t.Errorf("pod %s after the agent's restart: block %d container %s, before %d %s", x.name, host, cid, x.host, x.cid)
		}
	}

	// Removed: its pod dir, with the block's file, goes.
	uid := d.waitPod("userns-a", 10*time.Second, "Running", running).UID
	os.Remove(filepath.Join(d.dir, "manifests", "userns-a.yaml"))
	file := filepath.Join(d.dir, "root", "agent", "pods", string(uid), "userns")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := os.Stat(file); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there 60s after the pod's manifest was removed", file)
		}
	}
}
