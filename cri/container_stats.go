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
	return criContainerStats(c, s.deps.Sandboxes.ContainerStats(c))
}

// criContainerStats maps the cached figures (sandbox/stats.go, read at most
// once a second whoever asks) to the CRI message.
func criContainerStats(c *sandbox.Container, st sandbox.ContainerStats) *runtimeapi.ContainerStats {
	cg, fs := st.Cgroup, st.WritableLayer
	out := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{
			Id:          st.ID,
			Metadata:    c.Config().GetMetadata(),
			Labels:      c.Config().GetLabels(),
			Annotations: c.Config().GetAnnotations(),
		},
		WritableLayer: &runtimeapi.FilesystemUsage{
			Timestamp:  fs.Timestamp.UnixNano(),
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: fs.Path},
			UsedBytes:  &runtimeapi.UInt64Value{Value: fs.Bytes},
			InodesUsed: &runtimeapi.UInt64Value{Value: fs.Inodes},
		},
	}
	out.Cpu, out.Memory = criCgroupUsage(cg)
	return out
}

func criCgroupUsage(cg sandbox.CgroupStats) (*runtimeapi.CpuUsage, *runtimeapi.MemoryUsage) {
	ts := cg.Timestamp.UnixNano()
	var cpu *runtimeapi.CpuUsage
	var mem *runtimeapi.MemoryUsage
	if cg.HaveCPU {
		cpu = &runtimeapi.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cg.CPUUsageNanos}}
	}
	if cg.HaveM {
		mem = &runtimeapi.MemoryUsage{
			Timestamp:       ts,
			WorkingSetBytes: &runtimeapi.UInt64Value{Value: cg.WorkingSet},
			UsageBytes:      &runtimeapi.UInt64Value{Value: cg.MemoryUsage},
			RssBytes:        &runtimeapi.UInt64Value{Value: cg.RSS},
			PageFaults:      &runtimeapi.UInt64Value{Value: cg.PageFaults},
			MajorPageFaults: &runtimeapi.UInt64Value{Value: cg.MajorFaults},
		}
	}
	return cpu, mem
}
