package cri

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Checkpoint and restore (CheckpointContainer, CheckpointPod, RestorePod)
// need CRIU under the OCI runtime. peapod does not implement them yet;
// what it does is tell the caller (the kubelet's /checkpoint endpoint,
// crictl) the whole truth: whether CRIU could work here at all, from
// `criu check`, and that peapod itself does not checkpoint. Measured on
// this machine kind: Debian's CRIU 3.17.1 fails `criu check` on kernel
// 6.18 ("vdso: Unexpected rt vDSO area bounds").

// criuProbe caches the answer of `criu check` for a while: it takes a
// fraction of a second and the answer changes only with the host.
type criuProbe struct {
	mu  sync.Mutex
	at  time.Time
	err error
}

var criu criuProbe

const criuProbeTTL = time.Minute

// check is nil when CRIU is installed and `criu check` passes, else why
// not.
func (p *criuProbe) check(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.at.IsZero() && time.Since(p.at) < criuProbeTTL {
		return p.err
	}
	p.at, p.err = time.Now(), probeCRIU(ctx)
	return p.err
}

func probeCRIU(ctx context.Context) error {
	path, err := exec.LookPath("criu")
	if err != nil {
		return fmt.Errorf("CRIU is not installed (no criu in PATH)")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "check").CombinedOutput()
	if err != nil {
		return fmt.Errorf("`criu check` fails on this host: %s", lastLines(string(out), 2))
	}
	return nil
}

// lastLines is the tail of a command's output, on one line.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// checkpointUnavailable is the answer to every checkpoint call whose
// arguments are valid: FailedPrecondition when CRIU cannot work here (the
// host's fault, said with criu's own words), else Unimplemented.
func checkpointUnavailable(ctx context.Context, what string) error {
	if err := criu.check(ctx); err != nil {
		return status.Errorf(codes.FailedPrecondition, "%s needs CRIU: %v", what, err)
	}
	return status.Errorf(codes.Unimplemented, "%s is not implemented by peapod yet (CRIU itself works on this host)", what)
}

// CheckpointContainer answers why the container cannot be checkpointed.
func (s *Server) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id is required")
	}
	if req.GetLocation() == "" {
		return nil, invalid("location is required")
	}
	if _, err := s.deps.Sandboxes.Container(req.GetContainerId()); err != nil {
		return nil, toStatus(err)
	}
	return nil, checkpointUnavailable(ctx, "checkpointing container "+req.GetContainerId())
}

// CheckpointPod answers why the pod cannot be checkpointed.
func (s *Server) CheckpointPod(ctx context.Context, req *runtimeapi.CheckpointPodRequest) (*runtimeapi.CheckpointPodResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id is required")
	}
	if _, err := s.deps.Sandboxes.Sandbox(req.GetPodSandboxId()); err != nil {
		return nil, toStatus(err)
	}
	return nil, checkpointUnavailable(ctx, "checkpointing pod "+req.GetPodSandboxId())
}

// RestorePod answers why a pod cannot be restored.
func (s *Server) RestorePod(ctx context.Context, req *runtimeapi.RestorePodRequest) (*runtimeapi.RestorePodResponse, error) {
	return nil, checkpointUnavailable(ctx, "restoring a pod")
}
