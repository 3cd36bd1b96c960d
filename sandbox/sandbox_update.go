package sandbox

import (
	"context"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// UpdateSandboxResources records the pod-level resources (and overhead) the
// kubelet has just applied to the pod's cgroup, in the sandbox's config, as
// containerd does: the CRI calls this after the kubelet resized the pod
// cgroup itself, so there is no cgroup to write here. A nil argument keeps
// what the config had.
func (m *Manager) UpdateSandboxResources(ctx context.Context, id string, overhead, resources *runtimeapi.LinuxContainerResources) error {
	sb, err := m.Sandbox(id)
	if err != nil {
		return err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	cfg := proto.Clone(sb.Config()).(*runtimeapi.PodSandboxConfig)
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxPodSandboxConfig{}
	}
	if overhead != nil {
		cfg.Linux.Overhead = overhead
	}
	if resources != nil {
		cfg.Linux.Resources = resources
	}
	return sb.setConfig(m.o.Store, cfg)
}
