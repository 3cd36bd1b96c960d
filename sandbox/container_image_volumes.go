package sandbox

import (
	"context"
	"errors"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crierrors "k8s.io/cri-api/pkg/errors"

	"peapod/image"
	"peapod/sandbox/spec"
)

// imageVolumeError is a failed image volume mount. Its message starts with
// "ImageVolumeMountFailed: ", as containerd's and CRI-O's do: the kubelet
// counts image volume mount failures by that prefix of the CreateContainer
// error. kind is the ErrXxx that picks the gRPC code.
type imageVolumeError struct {
	kind error
	msg  string
}

func (e *imageVolumeError) Error() string {
	return crierrors.ErrImageVolumeMountFailed.Error() + ": " + e.msg
}

func (e *imageVolumeError) Unwrap() []error {
	return []error{crierrors.ErrImageVolumeMountFailed, e.kind}
}

// mountImageVolumes mounts the image of every CRI mount that names one
// (Mount.image) for container id and resolves its image_sub_path, and
// returns the host path each binds, by mount index. The image must be
// present already: the kubelet pulls image volumes itself before
// CreateContainer, so a missing one is NotFound, as with config.image.
// Each mount's ImageSpec gets image_ref set to the image id, which
// ContainerStatus reports. On error the caller releases what was mounted
// (ReleaseVolumes of id).
func (m *Manager) mountImageVolumes(ctx context.Context, id string, cfg *runtimeapi.ContainerConfig) (map[int]string, error) {
	var out map[int]string
	for i, mnt := range cfg.GetMounts() {
		if !spec.IsImageMount(mnt) {
			continue
		}
		field := fmt.Sprintf("mounts[%d]", i)
		// What needs no kernel first: a bad request mounts nothing.
		if err := spec.CheckImageMount(mnt, field); err != nil {
			return nil, &imageVolumeError{kind: ErrInvalid, msg: err.Error()}
		}
		ref := mnt.GetImage().GetImage()
		vol, err := m.o.Images.MountVolume(ctx, id, ref)
		if errors.Is(err, image.ErrNotFound) {
			return nil, &imageVolumeError{kind: ErrNotFound, msg: fmt.Sprintf("%s.image: image %q is not present: pull it first", field, ref)}
		}
		if err != nil {
			return nil, &imageVolumeError{kind: err, msg: fmt.Sprintf("%s.image %q: %v", field, ref, err)}
		}
		src, err := image.ResolveSubPath(vol.Root, mnt.GetImageSubPath())
		if errors.Is(err, image.ErrBadSubPath) {
			return nil, &imageVolumeError{kind: ErrInvalid, msg: fmt.Sprintf("%s.image_sub_path: %v (image %s)", field, err, ref)}
		}
		if err != nil {
			return nil, &imageVolumeError{kind: err, msg: fmt.Sprintf("%s.image_sub_path: %v", field, err)}
		}
		mnt.Image.ImageRef = vol.ImageID
		if out == nil {
			out = map[int]string{}
		}
		out[i] = src
	}
	return out, nil
}
