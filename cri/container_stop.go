package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StopContainer stops a container with its stop signal, SIGKILL after the
// timeout; unknown or exited containers succeed.
func (s *Server) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id is required")
	}
	if req.GetTimeout() < 0 {
		return nil, invalid("timeout must not be negative")
	}
	if err := s.deps.Sandboxes.StopContainer(ctx, req.GetContainerId(), req.GetTimeout()); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.StopContainerResponse{}, nil
}
