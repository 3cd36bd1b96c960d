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
	st := s.deps.Sandboxes.SandboxStats(sb)
	linux := &runtimeapi.LinuxPodSandboxStats{}
	linux.Cpu, linux.Memory = criCgroupUsage(st.Cgroup)
	if len(st.Network.Interfaces) > 0 {
		linux.Network = criNetwork(st.Network)
	}
	for _, cs := range st.Containers {
		if cs.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		if c, err := s.deps.Sandboxes.Container(cs.ID); err == nil {
			linux.Containers = append(linux.Containers, criContainerStats(c, cs))
		}
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{
			Id:          st.ID,
			Metadata:    sb.Config().GetMetadata(),
			Labels:      sb.Config().GetLabels(),
			Annotations: sb.Config().GetAnnotations(),
		},
		Linux: linux,
	}
}

// criNetwork maps the pod's interfaces; eth0 (the CNI default) is the
// default interface when present, else the first.
func criNetwork(n sandbox.NetworkStats) *runtimeapi.NetworkUsage {
	ts := n.Timestamp.UnixNano()
	out := &runtimeapi.NetworkUsage{Timestamp: ts}
	for _, i := range n.Interfaces {
		u := &runtimeapi.NetworkInterfaceUsage{
			Name:     i.Name,
			RxBytes:  &runtimeapi.UInt64Value{Value: i.RxBytes},
			RxErrors: &runtimeapi.UInt64Value{Value: i.RxErrors},
			TxBytes:  &runtimeapi.UInt64Value{Value: i.TxBytes},
			TxErrors: &runtimeapi.UInt64Value{Value: i.TxErrors},
		}
		if i.Name == "eth0" || out.DefaultInterface == nil {
			if out.DefaultInterface != nil {
				out.Interfaces = append(out.Interfaces, out.DefaultInterface)
			}
			out.DefaultInterface = u
			continue
		}
		out.Interfaces = append(out.Interfaces, u)
	}
	return out
}
