package cri

import (
	"context"
	"errors"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/image"
)

// RemoveImage removes an image with all its tags, as containerd does; an
// absent image succeeds. Containers using it keep their layers; an image
// a container mounts as an image volume stays, FailedPrecondition naming
// the container (crictl rmi prints it).
func (s *Server) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image.image is required")
	}
	if err := s.deps.Images.Remove(ctx, ref); err != nil && !errors.Is(err, image.ErrNotFound) {
		return nil, toStatus(err)
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports what the image store uses on disk.
func (s *Server) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	u, err := s.deps.Images.FsUsage()
	if err != nil {
		return nil, toStatus(err)
	}
	fs := &runtimeapi.FilesystemUsage{
		Timestamp:  timeNow().UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: u.Mountpoint},
		UsedBytes:  &runtimeapi.UInt64Value{Value: u.UsedBytes},
		InodesUsed: &runtimeapi.UInt64Value{Value: u.InodesUsed},
	}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{fs}}, nil
}
