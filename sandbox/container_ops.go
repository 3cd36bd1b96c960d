package sandbox

import (
	"context"
	"fmt"
	"time"

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
		return fmt.Errorf("update container %s: %w", rec.ID, err)
	}
	return nil
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
