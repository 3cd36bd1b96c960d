package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestResizeInPlace: UpdateContainerResources changes a running
// container's cgroup without a restart, ContainerStatus reports the
// resources in force (after a daemon restart too), and a memory limit
// below what the container holds and the kernel cannot reclaim is refused
// with FailedPrecondition, leaving the limit as it was.
func TestResizeInPlace(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}, agentDisabled: true})
	pullBusybox(t, d)
	ctx := d.ctx()
	cfg := podConfig(d, "resize")
	run, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	cc := containerConfig("app", "sh", "-c", "dd if=/dev/zero of=/dev/shm/hold bs=1M count=24 2>/dev/null; exec sleep 300")
	cc.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: 256, MemoryLimitInBytes: 96 << 20}}
	cr, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cc, SandboxConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	cid := cr.ContainerId
	if _, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cid}); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, d, cid, runtimeapi.ContainerState_CONTAINER_RUNNING)
	startedAt := st.StartedAt

	cgroupFile := func(hier, file string) string {
		t.Helper()
		resp, err := d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cid, Verbose: true})
		if err != nil {
			t.Fatal(err)
		}
		var info struct {
			CgroupsPath string `json:"cgroupsPath"`
		}
		if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.CgroupsPath == "" {
			t.Fatalf("verbose info: %v %q", err, resp.Info["info"])
		}
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", hier, info.CgroupsPath, file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	resources := func() *runtimeapi.LinuxContainerResources {
		t.Helper()
		resp, err := d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cid})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Status.GetResources().GetLinux()
	}

	// Up: more CPU, more memory.
	if _, err := d.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: cid,
		Linux: &runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 128 << 20}}); err != nil {
		t.Fatalf("resize up: %v", err)
	}
	if got := cgroupFile("memory", "memory.limit_in_bytes"); got != strconv.Itoa(128<<20) {
		t.Errorf("memory.limit_in_bytes = %s", got)
	}
	if got := cgroupFile("cpu", "cpu.shares"); got != "512" {
		t.Errorf("cpu.shares = %s", got)
	}
	if r := resources(); r.GetCpuShares() != 512 || r.GetMemoryLimitInBytes() != 128<<20 || r.GetCpuQuota() != 50000 {
		t.Errorf("status resources after resize: %v", r)
	}

	// Down below what it holds in /dev/shm (tmpfs, no swap): refused.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if n, _ := strconv.Atoi(cgroupFile("memory", "memory.usage_in_bytes")); n >= 20<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the container did not fill /dev/shm within 10s")
		}
	}
	_, err = d.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: cid,
		Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 8 << 20}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "below the memory") {
		t.Errorf("resize below usage: %v, want FailedPrecondition naming the memory", err)
	}
	if r := resources(); r.GetMemoryLimitInBytes() != 128<<20 {
		t.Errorf("status after a refused resize: %v", r)
	}

	// No restart, and the resources in force survive a daemon restart.
	d.stop()
	d.start()
	st = waitState(t, d, cid, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if st.StartedAt != startedAt {
		t.Errorf("container restarted by the resize")
	}
	if r := resources(); r.GetCpuShares() != 512 || r.GetMemoryLimitInBytes() != 128<<20 {
		t.Errorf("status resources after a daemon restart: %v", r)
	}
}
