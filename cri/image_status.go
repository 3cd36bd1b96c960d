package cri

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/image"
)

// ImageStatus reports one image; an absent image is an empty answer, not
// an error, as the CRI specifies.
func (s *Server) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image.image is required")
	}
	img, err := s.deps.Images.Get(ref)
	if errors.Is(err, image.ErrNotFound) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &runtimeapi.ImageStatusResponse{Image: criImage(img)}
	if req.GetVerbose() {
		info, _ := json.Marshal(map[string]any{
			"id":          img.ID,
			"repoTags":    img.RepoTags,
			"repoDigests": img.RepoDigests,
			"size":        img.Size,
			"chainIDs":    img.ChainIDs,
			"imageSpec":   img.Config,
		})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

// ListImages lists images, optionally only those matching filter.image.
func (s *Server) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	resp := &runtimeapi.ListImagesResponse{}
	if ref := req.GetFilter().GetImage().GetImage(); ref != "" {
		img, err := s.deps.Images.Get(ref)
		if errors.Is(err, image.ErrNotFound) {
			return resp, nil
		}
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Images = append(resp.Images, criImage(img))
		return resp, nil
	}
	for _, img := range s.deps.Images.List() {
		resp.Images = append(resp.Images, criImage(img))
	}
	return resp, nil
}

func criImage(img *image.Image) *runtimeapi.Image {
	out := &runtimeapi.Image{
		Id:          img.ID,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        img.Size,
		Pinned:      img.Pinned,
		Spec:        &runtimeapi.ImageSpec{Image: img.ID},
	}
	if img.Config != nil {
		uid, name := imageUser(img.Config.Config.User)
		if uid != nil {
			out.Uid = &runtimeapi.Int64Value{Value: *uid}
		}
		out.Username = name
	}
	return out
}

// imageUser splits an image's USER ("1000", "www-data", "1000:50") into a
// uid or a name, as the kubelet expects for runAsNonRoot checks.
func imageUser(user string) (*int64, string) {
	if user == "" {
		return nil, ""
	}
	u, _, _ := strings.Cut(user, ":")
	if n, err := strconv.ParseInt(u, 10, 64); err == nil {
		return &n, ""
	}
	return nil, u
}
