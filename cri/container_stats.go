package cri

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox"
)

// ContainerStats reports CPU, memory and writable-layer usage of one container.
func (s *Server) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id is required")
	}
	c, err := s.deps.Sandboxes.Container(req.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.ContainerStatsResponse{Stats: s.containerStats(c)}, nil
}

// ListContainerStats reports stats of the containers matching the filter.
func (s *Server) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	f := req.GetFilter()
	resp := &runtimeapi.ListContainerStatsResponse{}
	for _, c := range s.deps.Sandboxes.Containers() {
		rec := c.Record()
		if f != nil {
			if f.GetId() != "" && !strings.HasPrefix(rec.ID, f.GetId()) {
				continue
			}
			if f.GetPodSandboxId() != "" && !strings.HasPrefix(rec.SandboxID, f.GetPodSandboxId()) {
				continue
			}
			if !labelsMatch(c.Config().GetLabels(), f.GetLabelSelector()) {
				continue
			}
		}
		if rec.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		resp.Stats = append(resp.Stats, s.containerStats(c))
	}
	return resp, nil
}

func (s *Server) containerStats(c *sandbox.Container) *runtimeapi.ContainerStats {
	rec := c.Record()
	cg, bytes, inodes, upper := s.deps.Sandboxes.ContainerStats(c)
	ts := cg.Timestamp.UnixNano()
	out := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{
			Id:          rec.ID,
			Metadata:    c.Config().GetMetadata(),
			Labels:      c.Config().GetLabels(),
			Annotations: c.Config().GetAnnotations(),
		},
		WritableLayer: &runtimeapi.FilesystemUsage{
			Timestamp:  ts,
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: upper},
			UsedBytes:  &runtimeapi.UInt64Value{Value: bytes},
			InodesUsed: &runtimeapi.UInt64Value{Value: inodes},
		},
	}
	if cg.HaveCPU {
		out.Cpu = &runtimeapi.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cg.CPUUsageNanos}}
	}
	if cg.HaveM {
		out.Memory = &runtimeapi.MemoryUsage{
			Timestamp:       ts,
			WorkingSetBytes: &runtimeapi.UInt64Value{Value: cg.WorkingSet},
			UsageBytes:      &runtimeapi.UInt64Value{Value: cg.MemoryUsage},
			RssBytes:        &runtimeapi.UInt64Value{Value: cg.RSS},
			PageFaults:      &runtimeapi.UInt64Value{Value: cg.PageFaults},
			MajorPageFaults: &runtimeapi.UInt64Value{Value: cg.MajorFaults},
		}
	}
	return out
}
