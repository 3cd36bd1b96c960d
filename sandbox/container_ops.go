package sandbox

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/sandbox/spec"
)

// MaxExecOutput bounds each of stdout and stderr of ExecSync, as the
// kubelet's 16 MiB message limit would cut it anyway.
const MaxExecOutput = 16 << 20

// ExecSync runs cmd in a running container and returns its output.
func (m *Manager) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) ([]byte, []byte, int32, error) {
	c, err := m.Container(id)
	if err != nil {
		return nil, nil, 0, err
	}
	rec := c.Record()
	if rec.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return nil, nil, 0, fmt.Errorf("%w: container %s is %s, not RUNNING", ErrFailedPrecondion, rec.ID, stateName(rec.State))
	}
	rt, err := m.containerRuntime(rec)
	if err != nil {
		return nil, nil, 0, err
	}
	return rt.ExecSync(ctx, rec.ID, cmd, timeout, MaxExecOutput)
}

// UpdateResources applies new cgroup limits to a created or running container.
func (m *Manager) UpdateResources(ctx context.Context, id string, res *runtimeapi.LinuxContainerResources) error {
	c, err := m.Container(id)
	if err != nil {
		return err
	}
	c.op.Lock()
	defer c.op.Unlock()
	rec := c.Record()
	if rec.State != runtimeapi.ContainerState_CONTAINER_CREATED && rec.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("%w: container %s is %s", ErrFailedPrecondion, rec.ID, stateName(rec.State))
	}
	rt, err := m.containerRuntime(rec)
	if err != nil {
		return err
	}
	ociRes := spec.Resources(res)
	if m.noHugetlb && ociRes != nil {
		var w spec.Warnings
		ociRes.HugepageLimits = spec.DropHugepageLimits(ociRes.HugepageLimits, "linux.hugepage_limits", &w)
		for _, msg := range w {
			klog.InfoS("UpdateContainerResources adjusted", "id", rec.ID, "warning", msg)
		}
	}
	if m.noSwapAccounting && ociRes != nil && ociRes.Memory != nil {
		ociRes.Memory.Swap = nil
	}
	if err := rt.UpdateResources(ctx, rec.ID, ociRes); err != nil {
		if msg := err.Error(); res.GetMemoryLimitInBytes() > 0 && (strings.Contains(msg, "unable to set memory limit") || strings.Contains(msg, "device or resource busy")) {
			// cgroup v1 refuses a limit below what it cannot reclaim
			// (runc says so, or passes the kernel's EBUSY on).
			return fmt.Errorf("%w: update container %s: memory limit %d bytes is below the memory the container uses and the kernel cannot reclaim: %v",
				ErrFailedPrecondion, rec.ID, res.GetMemoryLimitInBytes(), err)
		}
		return fmt.Errorf("update container %s: %w", rec.ID, err)
	}
	// ContainerStatus reports the resources in force (the kubelet's
	// in-place resize reads them back).
	cfg := proto.Clone(c.Config()).(*runtimeapi.ContainerConfig)
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	cfg.Linux.Resources = mergeResources(cfg.Linux.Resources, res)
	return c.setConfig(m.o.Store, cfg)
}

// mergeResources is old with every field new sets, as the OCI runtime
// applied them: an update that leaves a field zero leaves it as it was.
func mergeResources(old, upd *runtimeapi.LinuxContainerResources) *runtimeapi.LinuxContainerResources {
	out := &runtimeapi.LinuxContainerResources{}
	if old != nil {
		out = proto.Clone(old).(*runtimeapi.LinuxContainerResources)
	}
	if upd == nil {
		return out
	}
	if upd.CpuPeriod != 0 {
		out.CpuPeriod = upd.CpuPeriod
	}
	if upd.CpuQuota != 0 {
		out.CpuQuota = upd.CpuQuota
	}
	if upd.CpuShares != 0 {
		out.CpuShares = upd.CpuShares
	}
	if upd.MemoryLimitInBytes != 0 {
		out.MemoryLimitInBytes = upd.MemoryLimitInBytes
	}
	if upd.MemorySwapLimitInBytes != 0 {
		out.MemorySwapLimitInBytes = upd.MemorySwapLimitInBytes
	}
	if upd.CpusetCpus != "" {
		out.CpusetCpus = upd.CpusetCpus
	}
	if upd.CpusetMems != "" {
		out.CpusetMems = upd.CpusetMems
	}
	if len(upd.HugepageLimits) > 0 {
		out.HugepageLimits = upd.HugepageLimits
	}
	if len(upd.Unified) > 0 {
		if out.Unified == nil {
			out.Unified = map[string]string{}
		}
		for k, v := range upd.Unified {
			out.Unified[k] = v
		}
	}
	return out
}

// ReopenLog asks conmon to reopen the container's log file (after the
// kubelet rotated it). It never waits on the container's op lock, so it
// cannot hang behind a stop.
func (m *Manager) ReopenLog(ctx context.Context, id string) error {
	c, err := m.Container(id)
	if err != nil {
		return err
	}
	rec := c.Record()
	if rec.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("%w: container %s is not running", ErrFailedPrecondion, rec.ID)
	}
	rt, err := m.containerRuntime(rec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return rt.ReopenLog(ctx, rec.ID)
}
