package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Attach answers with a streaming URL that connects to a running
// container's stdio through its conmon.
func (s *Server) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id is required")
	}
	if s.deps.Streams == nil {
		return nil, unavailableStreams()
	}
	if err := s.deps.Sandboxes.CheckRunning(req.GetContainerId(), "attach to"); err != nil {
		return nil, toStatus(err)
	}
	return s.deps.Streams.GetAttach(req)
}
