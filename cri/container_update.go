package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// UpdateContainerResources applies new cgroup limits.
func (s *Server) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id is required")
	}
	if req.GetLinux() == nil {
		return nil, invalid("linux resources are required")
	}
	if err := s.deps.Sandboxes.UpdateResources(ctx, req.GetContainerId(), req.GetLinux()); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}
