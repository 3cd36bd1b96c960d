package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const busybox = "docker.io/library/busybox:latest"

// podConfig is what crictl's pod-config.json would hold.
func podConfig(d *daemon, name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: "uid-" + name + "-" + randHex(3)},
		Hostname:     name,
		LogDirectory: filepath.Join(d.dir, "logs", name),
		Labels:       map[string]string{"app": name},
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"svc.cluster.local"}},
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
	}
}

func containerConfig(name string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: busybox},
		Command:  cmd,
		LogPath:  name + ".log",
		Labels:   map[string]string{"c": name},
		Envs:     []*runtimeapi.KeyValue{{Key: "GREETING", Value: []byte("hi")}},
	}
}

// pullBusybox pulls the test image through the docker.io mirror.
func pullBusybox(t *testing.T, d *daemon) {
	t.Helper()
	if _, err := d.img.PullImage(d.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: busybox}}); err != nil {
		t.Fatalf("pull %s: %v", busybox, err)
	}
}

func waitState(t *testing.T, d *daemon, id string, want runtimeapi.ContainerState) *runtimeapi.ContainerStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := d.rt.ContainerStatus(d.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			t.Fatalf("ContainerStatus %s: %v", id, err)
		}
		if resp.Status.State == want {
			return resp.Status
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s is %s, want %s", id, resp.Status.State, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPodLifecycle(t *testing.T) {
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	pullBusybox(t, d)
	ctx := d.ctx()

	cfg := podConfig(d, "life")
	start := time.Now()
	run, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	t.Logf("RunPodSandbox took %v", time.Since(start))
	podID := run.PodSandboxId
	st, err := d.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.Status.GetNetwork().GetIp() == "" {
		t.Fatalf("sandbox status = %v", st.Status)
	}
	podIP := st.Status.Network.Ip
	checkPause(t, d, podID)
	if !strings.HasPrefix(podIP, strings.TrimSuffix(d.subnet, "0/24")) {
		t.Fatalf("pod IP %s not in %s", podIP, d.subnet)
	}

	start = time.Now()
	cc := containerConfig("main", "sh", "-c", "echo out-$GREETING; echo err >&2; hostname; cat /etc/resolv.conf; ip addr show eth0 2>/dev/null || cat /proc/net/fib_trie | head -3; exec sleep 300")
	created, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: cfg})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	cid := created.ContainerId
	if _, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cid}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	t.Logf("CreateContainer+StartContainer took %v", time.Since(start))
	cst := waitState(t, d, cid, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if cst.StartedAt == 0 || cst.ImageRef == "" || cst.LogPath == "" {
		t.Fatalf("status lacks fields: %v", cst)
	}
	// The container's conmon runs in its pod's cgroup, not in peapod's.
	if b, err := os.ReadFile(filepath.Join(d.dir, "run", "oci", "runc", cid, "conmon.pid")); err != nil {
		t.Errorf("conmon pid: %v", err)
	} else if cg, _ := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/cgroup"); !regexp.MustCompile(`:memory:/\S+/conmon-` + cid + `\n`).Match(cg) {
		t.Errorf("conmon not in its pod's cgroup:\n%s", cg)
	}

	// Logs in the CRI format, stdout and stderr.
	var logs []byte
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		logs, _ = os.ReadFile(cst.LogPath)
		if bytes.Contains(logs, []byte("svc.cluster.local")) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{" stdout F out-hi", " stderr F err", " stdout F life", "nameserver 10.0.0.10"} {
		if !bytes.Contains(logs, []byte(want)) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}

	// ExecSync sees the pod's network and hostname.
	ex, err := d.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"sh", "-c", "cat /etc/hostname; grep life /etc/hosts; exit 3"}, Timeout: 10})
	if err != nil {
		t.Fatalf("ExecSync: %v", err)
	}
	if ex.ExitCode != 3 || !strings.Contains(string(ex.Stdout), "life") || !strings.Contains(string(ex.Stdout), podIP) {
		t.Fatalf("ExecSync = code %d stdout %q stderr %q", ex.ExitCode, ex.Stdout, ex.Stderr)
	}

	// The host reaches the pod over the bridge (pod IPs on our own bridge only).
	if out, err := exec.Command("ping", "-c", "1", "-W", "2", podIP).CombinedOutput(); err != nil && !strings.Contains(string(out), "not found") {
		if _, lookErr := exec.LookPath("ping"); lookErr == nil {
			t.Errorf("ping %s: %v\n%s", podIP, err, out)
		}
	}

	// Stats come from the cgroups.
	stats, err := d.rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: cid})
	if err != nil {
		t.Fatalf("ContainerStats: %v", err)
	}
	if stats.Stats.GetMemory().GetWorkingSetBytes().GetValue() == 0 || stats.Stats.GetCpu().GetUsageCoreNanoSeconds().GetValue() == 0 {
		t.Errorf("stats look empty: %v", stats.Stats)
	}
	ps, err := d.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
	if err != nil || len(ps.Stats) != 1 {
		t.Fatalf("ListPodSandboxStats = %v, %v", ps, err)
	}

	// Update resources lands in the memory cgroup.
	if _, err := d.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: cid, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, CpuShares: 512}}); err != nil {
		t.Fatalf("UpdateContainerResources: %v", err)
	}
	// The kubelet reports a pod-level resize after it resized the pod cgroup.
	podRes := &runtimeapi.LinuxContainerResources{CpuShares: 1024, MemoryLimitInBytes: 128 << 20}
	if _, err := d.rt.UpdatePodSandboxResources(ctx, &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: podID, Resources: podRes}); err != nil {
		t.Fatalf("UpdatePodSandboxResources: %v", err)
	}
	for _, tc := range []struct {
		id   string
		code codes.Code
	}{{"", codes.InvalidArgument}, {"0000unknown", codes.NotFound}} {
		if _, err := d.rt.UpdatePodSandboxResources(ctx, &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: tc.id, Resources: podRes}); status.Code(err) != tc.code {
			t.Errorf("UpdatePodSandboxResources(%q) = %v, want %s", tc.id, err, tc.code)
		}
	}

	// Filters.
	lc, err := d.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID, LabelSelector: map[string]string{"c": "main"}}})
	if err != nil || len(lc.Containers) != 1 {
		t.Fatalf("ListContainers = %v, %v", lc, err)
	}
	lp, err := d.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "other"}}})
	if err != nil || len(lp.Items) != 0 {
		t.Fatalf("ListPodSandbox with a foreign label = %v, %v", lp, err)
	}

	// Stop with the timeout: sleep dies by SIGTERM at once.
	if _, err := d.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: cid, Timeout: 5}); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	cst = waitState(t, d, cid, runtimeapi.ContainerState_CONTAINER_EXITED)
	if cst.FinishedAt == 0 || cst.ExitCode == 0 || cst.Reason != "Error" {
		t.Errorf("status after stop: %v", cst)
	}
	// A stopped container's runtime instance is deleted at once, as
	// containerd deletes a task on exit: no runc state, no conmon dir left
	// for RemoveContainer, and the status still holds the exit.
	runtimeGone := func(id string) bool {
		for _, p := range []string{filepath.Join(d.dir, "run", "runc", id), filepath.Join(d.dir, "run", "oci", "runc", id)} {
			if _, err := os.Stat(p); err == nil {
				return false
			}
		}
		return true
	}
	if !runtimeGone(cid) {
		t.Errorf("runtime state of stopped container %s still there", cid)
	}
	if mounts, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(mounts), cid) {
		t.Errorf("rootfs of stopped container %s still mounted", cid)
	}
	// A container that exits by itself: its runtime instance goes shortly
	// after its exit is recorded, and its exit code stays.
	quick, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("quick", "sh", "-c", "exit 7"), SandboxConfig: cfg})
	if err != nil {
		t.Fatalf("CreateContainer quick: %v", err)
	}
	if _, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: quick.ContainerId}); err != nil {
		t.Fatalf("StartContainer quick: %v", err)
	}
	if qst := waitState(t, d, quick.ContainerId, runtimeapi.ContainerState_CONTAINER_EXITED); qst.ExitCode != 7 || qst.Reason != "Error" {
		t.Errorf("quick status: %v", qst)
	}
	for deadline := time.Now().Add(10 * time.Second); !runtimeGone(quick.ContainerId); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("runtime state of exited container %s still there after 10s", quick.ContainerId)
		}
	}
	if qst, err := d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: quick.ContainerId}); err != nil || qst.Status.ExitCode != 7 || qst.Status.FinishedAt == 0 {
		t.Errorf("quick status after its runtime state went: %v, %v", qst, err)
	}
	if _, err := d.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: quick.ContainerId}); err != nil {
		t.Fatalf("RemoveContainer quick: %v", err)
	}
	// Idempotence: stop again, stop and remove unknown ids.
	for _, id := range []string{cid, "0000unknown"} {
		if _, err := d.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
			t.Errorf("StopContainer(%s) again: %v", id, err)
		}
	}
	if _, err := d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: "0000unknown"}); err != nil {
		t.Errorf("StopPodSandbox(unknown): %v", err)
	}
	if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: "0000unknown"}); err != nil {
		t.Errorf("RemovePodSandbox(unknown): %v", err)
	}
	if _, err := d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "0000unknown"}); status.Code(err) != codes.NotFound {
		t.Errorf("ContainerStatus(unknown) = %v, want NotFound", err)
	}

	if _, err := d.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cid}); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Fatalf("StopPodSandbox #%d: %v", i+1, err)
		}
	}
	if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	// The IP went back to host-local.
	if _, err := os.Stat(filepath.Join(d.dir, "ipam")); err == nil {
		out, _ := exec.Command("sh", "-c", "ls -R "+filepath.Join(d.dir, "ipam")).Output()
		if strings.Contains(string(out), podIP) {
			t.Errorf("IP %s still allocated:\n%s", podIP, out)
		}
	}
	if _, err := os.Stat("/run/netns/peapod-" + podID); err == nil {
		t.Errorf("netns of %s left behind", podID)
	}
}

func TestInvalidInput(t *testing.T) {
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	ctx := d.ctx()
	tests := []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"pod without metadata", func() error {
			_, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{}})
			return err
		}, codes.InvalidArgument, "metadata"},
		{"unknown handler", func() error {
			_, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig(d, "h"), RuntimeHandler: "kata"})
			return err
		}, codes.InvalidArgument, "kata"},
		{"container in unknown pod", func() error {
			_, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "nope", Config: containerConfig("x", "true")})
			return err
		}, codes.NotFound, "nope"},
		{"container without image", func() error {
			_, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "nope", Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "x"}}})
			return err
		}, codes.InvalidArgument, "image"},
		{"start unknown container", func() error {
			_, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: "nope"})
			return err
		}, codes.NotFound, "nope"},
		{"pull bad reference", func() error {
			_, err := d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "UPPER/Case::bad"}})
			return err
		}, codes.InvalidArgument, "image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %s naming %q", err, tt.code, tt.want)
			}
		})
	}
}

// checkPause looks at the pod's infra process, which peapod starts itself:
// the pause image's user, no capabilities, no_new_privs, in its own cgroup
// under the pod's.
func checkPause(t *testing.T, d *daemon, podID string) {
	t.Helper()
	vs, err := d.rt.PodSandboxStatus(d.ctx(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(vs.Info["info"]), &info); err != nil || info.Pid <= 0 {
		t.Fatalf("verbose info %q: pid %d, %v", vs.Info["info"], info.Pid, err)
	}
	// RunPodSandbox returned after the pause reported itself confined.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.Pid))
	if err != nil {
		t.Fatalf("pause %d: %v", info.Pid, err)
	}
	for _, want := range []string{"Uid:\t65535\t65535\t65535\t65535", "CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "NoNewPrivs:\t1"} {
		if !bytes.Contains(status, []byte(want)) {
			t.Errorf("pause status lacks %q:\n%s", want, status)
		}
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", info.Pid))
	if !regexp.MustCompile(`:memory:/\S+/` + podID + `\n`).Match(cg) {
		t.Errorf("pause not in its pod's cgroup:\n%s", cg)
	}
}
