package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/image"
)

// PullImage pulls an image and answers with its id, as containerd does.
func (s *Server) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image.image is required")
	}
	if _, err := image.Normalize(ref); err != nil {
		return nil, invalid("image.image: " + err.Error())
	}
	var auth *image.Auth
	if a := req.GetAuth(); a != nil {
		auth = &image.Auth{
			Username:      a.GetUsername(),
			Password:      a.GetPassword(),
			Auth:          a.GetAuth(),
			ServerAddress: a.GetServerAddress(),
			IdentityToken: a.GetIdentityToken(),
			RegistryToken: a.GetRegistryToken(),
		}
	}
	img, err := s.deps.Images.Pull(ctx, ref, auth)
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.PullImageResponse{ImageRef: img.ID}, nil
}
