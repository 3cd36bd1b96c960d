package cri

import (
	"context"
	"encoding/json"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox"
)

// PodSandboxStatus reports one sandbox with its IPs and namespaces.
func (s *Server) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id is required")
	}
	sb, err := s.deps.Sandboxes.Sandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(err)
	}
	rec := sb.Record()
	// The containers' statuses and a timestamp, as for the kubelet's
	// EventedPLEG (it takes the pod's whole status from this one call).
	resp := &runtimeapi.PodSandboxStatusResponse{
		Status:             sandboxStatus(sb),
		ContainersStatuses: s.containerStatusesOf(rec.ID),
		Timestamp:          timeNow().UnixNano(),
	}
	if req.GetVerbose() {
		info, _ := json.Marshal(map[string]any{
			"pid":            rec.PausePid,
			"netns":          rec.NetNS,
			"runtimeHandler": rec.RuntimeHandler,
			"cgroupParent":   rec.CgroupParent,
			"config":         sb.Config(),
		})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

// sandboxStatus is the CRI status of sb now.
func sandboxStatus(sb *sandbox.Sandbox) *runtimeapi.PodSandboxStatus {
	rec := sb.Record()
	cfg := sb.Config()
	st := &runtimeapi.PodSandboxStatus{
		Id:             rec.ID,
		Metadata:       cfg.GetMetadata(),
		State:          rec.State,
		CreatedAt:      rec.CreatedAt,
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: rec.RuntimeHandler,
		Linux: &runtimeapi.LinuxPodSandboxStatus{
			Namespaces: &runtimeapi.Namespace{Options: cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()},
		},
	}
	if len(rec.IPs) > 0 && rec.State == runtimeapi.PodSandboxState_SANDBOX_READY {
		st.Network = &runtimeapi.PodSandboxNetworkStatus{Ip: rec.IPs[0]}
		for _, ip := range rec.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	return st
}

// ListPodSandbox lists sandboxes matching the filter (id prefix, state,
// labels).
func (s *Server) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	resp := &runtimeapi.ListPodSandboxResponse{}
	for _, sb := range s.deps.Sandboxes.Sandboxes() {
		rec := sb.Record()
		cfg := sb.Config()
		if f != nil {
			if f.GetId() != "" && !strings.HasPrefix(rec.ID, f.GetId()) {
				continue
			}
			if f.GetState() != nil && f.GetState().GetState() != rec.State {
				continue
			}
			if !labelsMatch(cfg.GetLabels(), f.GetLabelSelector()) {
				continue
			}
		}
		resp.Items = append(resp.Items, sandboxItem(sb, rec))
	}
	return resp, nil
}

func sandboxItem(sb *sandbox.Sandbox, rec sandbox.SandboxRecord) *runtimeapi.PodSandbox {
	cfg := sb.Config()
	return &runtimeapi.PodSandbox{
		Id:             rec.ID,
		Metadata:       cfg.GetMetadata(),
		State:          rec.State,
		CreatedAt:      rec.CreatedAt,
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: rec.RuntimeHandler,
	}
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
