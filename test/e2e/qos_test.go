package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/internal/procfs"
)

// cgroupFile reads a v1 control file of the cgroup at path.
func cgroupFile(t *testing.T, controller, path, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, path, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestAgentQoSCgroups: a Guaranteed, a Burstable and a BestEffort static
// pod land in the kubelet's QoS tiers with the kubelet's pod-level limits,
// their containers below them; kubepods/ carries node allocatable
// (capacity − system_reserved − kube_reserved); a removed pod's cgroup
// goes with it.
func TestAgentQoSCgroups(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		t.Skip("reads cgroup v1 files; this machine kind is hybrid")
	}
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{
		mirrors:     map[string]string{"docker.io": "http://" + reg},
		agentConfig: "system_reserved = { cpu = \"500m\", memory = \"1Gi\" }\nkube_reserved = { memory = \"256Mi\" }\npod_pids_limit = 200\n",
	})
	pod := func(name, resources string) string {
		return fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    resources: %s
`, name, resources)
	}
	d.writeManifest("g.yaml", pod("guaranteed", `{limits: {cpu: 500m, memory: 64Mi}}`))
	d.writeManifest("b.yaml", pod("burstable", `{requests: {cpu: 250m, memory: 16Mi}, limits: {memory: 32Mi}}`))
	d.writeManifest("be.yaml", pod("besteffort", `{}`))
	running := func(p *v1.Pod) bool { return p.Status.Phase == v1.PodRunning }
	g := d.waitPod("guaranteed", 60*time.Second, "Running", running)
	b := d.waitPod("burstable", 60*time.Second, "Running", running)
	be := d.waitPod("besteffort", 60*time.Second, "Running", running)

	kp := d.cgroupRoot + "/kubepods"
	mi, _ := os.ReadFile("/proc/meminfo")
	memTotal := procfs.ParseMeminfo(mi)["MemTotal"]
	for _, c := range []struct{ controller, path, file, want string }{
		{"memory", kp, "memory.limit_in_bytes", strconv.FormatUint(memTotal-(1<<30)-(256<<20), 10)},
		{"cpu", kp, "cpu.shares", strconv.Itoa((runtime.NumCPU()*1000 - 500) * 1024 / 1000)},
		{"cpu", kp + "/besteffort", "cpu.shares", "2"},
		{"cpu", kp + "/burstable", "cpu.shares", "256"},

		{"cpu", kp + "/pod" + string(g.UID), "cpu.shares", "512"},
		{"cpu", kp + "/pod" + string(g.UID), "cpu.cfs_quota_us", "50000"},
		{"memory", kp + "/pod" + string(g.UID), "memory.limit_in_bytes", strconv.Itoa(64 << 20)},
		{"pids", kp + "/pod" + string(g.UID), "pids.max", "200"},

		{"cpu", kp + "/burstable/pod" + string(b.UID), "cpu.shares", "256"},
		{"cpu", kp + "/burstable/pod" + string(b.UID), "cpu.cfs_quota_us", "-1"},
		{"memory", kp + "/burstable/pod" + string(b.UID), "memory.limit_in_bytes", strconv.Itoa(32 << 20)},

		{"cpu", kp + "/besteffort/pod" + string(be.UID), "cpu.shares", "2"},
		{"cpu", kp + "/besteffort/pod" + string(be.UID), "cpu.cfs_quota_us", "-1"},
	} {
		if got := cgroupFile(t, c.controller, c.path, c.file); got != c.want {
			t.Errorf("%s %s = %s, want %s", c.path, c.file, got, c.want)
		}
	}
	for _, p := range []*v1.Pod{g, b, be} {
		if p.Status.QOSClass == "" {
			t.Errorf("pod %s: no qosClass in status", p.Name)
		}
		// The container's own cgroup is below its pod's: the memory cgroup
		// of its process says where it is.
		cs := containerStatus(p, "main")
		id := cs.ContainerID[strings.Index(cs.ContainerID, "://")+3:]
		pid := containerPid(t, d, id)
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if !strings.Contains(string(cg), ":memory:"+kp) || !strings.Contains(string(cg), "pod"+string(p.UID)+"/") {
			t.Errorf("pod %s: container's cgroups are not below its pod cgroup:\n%s", p.Name, cg)
		}
	}

	// A removed pod's cgroup is removed with it; the tier's shares follow.
	os.Remove(filepath.Join(d.dir, "manifests", "b.yaml"))
	dir := filepath.Join("/sys/fs/cgroup/memory", kp, "burstable", "pod"+string(b.UID))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there 30s after its pod's file was removed", dir)
		}
	}
	if got := cgroupFile(t, "cpu", kp+"/burstable", "cpu.shares"); got != "2" {
		t.Errorf("burstable cpu.shares with no burstable pod = %s, want 2", got)
	}
}

// containerPid is the container's init process, from the verbose status.
func containerPid(t *testing.T, d *daemon, id string) int {
	t.Helper()
	vs, err := d.rt.ContainerStatus(d.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(vs.Info["info"]), &info); err != nil || info.Pid <= 0 {
		t.Fatalf("container %s verbose info %q: pid %d, %v", id, vs.Info["info"], info.Pid, err)
	}
	return info.Pid
}
