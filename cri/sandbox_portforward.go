package cri

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PortForward answers with a streaming URL whose connections reach ports
// on localhost inside the pod's network namespace.
func (s *Server) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id is required")
	}
	for _, p := range req.GetPort() {
		if p <= 0 || p > 65535 {
			return nil, invalid("port out of range")
		}
	}
	if s.deps.Streams == nil {
		return nil, unavailableStreams()
	}
	if err := s.deps.Sandboxes.CheckPortForward(req.GetPodSandboxId()); err != nil {
		return nil, toStatus(err)
	}
	return s.deps.Streams.GetPortForward(req)
}

// Streams hands out the URLs of the streaming server (cri/streaming).
type Streams interface {
	GetExec(*runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error)
	GetAttach(*runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error)
	GetPortForward(*runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error)
}

func unavailableStreams() error {
	return status.Error(codes.Unavailable, "streaming server not configured")
}
