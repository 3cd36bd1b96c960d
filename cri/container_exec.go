package cri

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ExecSync runs a command in a container and returns its output; a
// timeout kills the command and answers with what it had printed.
func (s *Server) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id is required")
	}
	if len(req.GetCmd()) == 0 {
		return nil, invalid("cmd is required")
	}
	if req.GetTimeout() < 0 {
		return nil, invalid("timeout must not be negative")
	}
	stdout, stderr, code, err := s.deps.Sandboxes.ExecSync(ctx, req.GetContainerId(), req.GetCmd(), time.Duration(req.GetTimeout())*time.Second)
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout, Stderr: stderr, ExitCode: code}, nil
}

// Exec answers with a streaming URL for an interactive command in a
// running container; the session itself runs when the client connects.
func (s *Server) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id is required")
	}
	if len(req.GetCmd()) == 0 {
		return nil, invalid("cmd is required")
	}
	if s.deps.Streams == nil {
		return nil, unavailableStreams()
	}
	if err := s.deps.Sandboxes.CheckRunning(req.GetContainerId(), "exec into"); err != nil {
		return nil, toStatus(err)
	}
	return s.deps.Streams.GetExec(req)
}
