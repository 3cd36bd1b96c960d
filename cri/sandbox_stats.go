package cri

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox"
)

// PodSandboxStats reports the pod cgroup's figures and its containers'.
func (s *Server) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id is required")
	}
	sb, err := s.deps.Sandboxes.Sandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: s.sandboxStats(sb)}, nil
}

// ListPodSandboxStats reports stats of the ready sandboxes matching the filter.
func (s *Server) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	resp := &runtimeapi.ListPodSandboxStatsResponse{}
	for _, sb := range s.deps.Sandboxes.Sandboxes() {
		rec := sb.Record()
		if f != nil {
			if f.GetId() != "" && !strings.HasPrefix(rec.ID, f.GetId()) {
				continue
			}
			if !labelsMatch(sb.Config().GetLabels(), f.GetLabelSelector()) {
				continue
			}
		}
		if rec.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		resp.Stats = append(resp.Stats, s.sandboxStats(sb))
	}
	return resp, nil
}

func (s *Server) sandboxStats(sb *sandbox.Sandbox) *runtimeapi.PodSandboxStats {
	rec := sb.Record()
	cg := s.deps.Sandboxes.SandboxStats(sb)
	ts := cg.Timestamp.UnixNano()
	linux := &runtimeapi.LinuxPodSandboxStats{}
	if cg.HaveCPU {
		linux.Cpu = &runtimeapi.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cg.CPUUsageNanos}}
	}
	if cg.HaveM {
		linux.Memory = &runtimeapi.MemoryUsage{
			Timestamp:       ts,
			WorkingSetBytes: &runtimeapi.UInt64Value{Value: cg.WorkingSet},
			UsageBytes:      &runtimeapi.UInt64Value{Value: cg.MemoryUsage},
			RssBytes:        &runtimeapi.UInt64Value{Value: cg.RSS},
			PageFaults:      &runtimeapi.UInt64Value{Value: cg.PageFaults},
			MajorPageFaults: &runtimeapi.UInt64Value{Value: cg.MajorFaults},
		}
	}
	for _, c := range s.deps.Sandboxes.Containers() {
		r := c.Record()
		if r.SandboxID == rec.ID && r.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			linux.Containers = append(linux.Containers, s.containerStats(c))
		}
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{
			Id:          rec.ID,
			Metadata:    sb.Config().GetMetadata(),
			Labels:      sb.Config().GetLabels(),
			Annotations: sb.Config().GetAnnotations(),
		},
		Linux: linux,
	}
}
