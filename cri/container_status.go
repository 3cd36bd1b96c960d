package cri

import (
	"context"
	"encoding/json"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox"
)

// ContainerStatus reports one container, with its exit code, reason and
// effective user.
func (s *Server) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id is required")
	}
	c, err := s.deps.Sandboxes.Container(req.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	rec := c.Record()
	resp := &runtimeapi.ContainerStatusResponse{Status: containerStatus(c, rec)}
	if req.GetVerbose() {
		info, _ := json.Marshal(map[string]any{
			"sandboxID":   rec.SandboxID,
			"pid":         rec.Pid,
			"cgroupsPath": rec.CgroupsPath,
			"config":      c.Config(),
		})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

// containerStatus is the CRI status of c as of rec.
func containerStatus(c *sandbox.Container, rec sandbox.ContainerRecord) *runtimeapi.ContainerStatus {
	cfg := c.Config()
	return &runtimeapi.ContainerStatus{
		Id:          rec.ID,
		Metadata:    cfg.GetMetadata(),
		State:       rec.State,
		CreatedAt:   rec.CreatedAt,
		StartedAt:   rec.StartedAt,
		FinishedAt:  rec.FinishedAt,
		ExitCode:    rec.ExitCode,
		Image:       &runtimeapi.ImageSpec{Image: rec.ImageName, Annotations: cfg.GetImage().GetAnnotations()},
		ImageRef:    rec.RepoDigest,
		ImageId:     rec.ImageRef,
		Reason:      rec.Reason,
		Message:     rec.Message,
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		Mounts:      cfg.GetMounts(),
		LogPath:     rec.LogPath,
		Resources:   &runtimeapi.ContainerResources{Linux: cfg.GetLinux().GetResources()},
		User: &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{
			Uid: rec.UID, Gid: rec.GID, SupplementalGroups: rec.GIDs,
		}},
	}
}

// ListContainers lists containers matching the filter (id prefix, state,
// sandbox id prefix, labels).
func (s *Server) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := req.GetFilter()
	resp := &runtimeapi.ListContainersResponse{}
	for _, c := range s.deps.Sandboxes.Containers() {
		rec := c.Record()
		if !containerMatches(c, rec, f) {
			continue
		}
		resp.Containers = append(resp.Containers, containerItem(c, rec))
	}
	return resp, nil
}

func containerMatches(c *sandbox.Container, rec sandbox.ContainerRecord, f *runtimeapi.ContainerFilter) bool {
	if f == nil {
		return true
	}
	if f.GetId() != "" && !strings.HasPrefix(rec.ID, f.GetId()) {
		return false
	}
	if f.GetPodSandboxId() != "" && !strings.HasPrefix(rec.SandboxID, f.GetPodSandboxId()) {
		return false
	}
	if f.GetState() != nil && f.GetState().GetState() != rec.State {
		return false
	}
	return labelsMatch(c.Config().GetLabels(), f.GetLabelSelector())
}

func containerItem(c *sandbox.Container, rec sandbox.ContainerRecord) *runtimeapi.Container {
	cfg := c.Config()
	return &runtimeapi.Container{
		Id:           rec.ID,
		PodSandboxId: rec.SandboxID,
		Metadata:     cfg.GetMetadata(),
		Image:        &runtimeapi.ImageSpec{Image: rec.ImageName, Annotations: cfg.GetImage().GetAnnotations()},
		ImageRef:     rec.RepoDigest,
		ImageId:      rec.ImageRef,
		State:        rec.State,
		CreatedAt:    rec.CreatedAt,
		Labels:       cfg.GetLabels(),
		Annotations:  cfg.GetAnnotations(),
	}
}
