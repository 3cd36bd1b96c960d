package loop

import (
	"context"
	"errors"
	"os"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"peapod/volumes/disk"
)

// NodePublishVolume bind-mounts the staged filesystem at the target path,
// read-only when the request or the access mode says so.
func (d *Driver) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id, staging, target := req.GetVolumeId(), req.GetStagingTargetPath(), req.GetTargetPath()
	if err := checkID("volume_id", id); err != nil {
		return nil, err
	}
	if err := checkPath("staging_target_path", staging); err != nil {
		return nil, err
	}
	if err := checkPath("target_path", target); err != nil {
		return nil, err
	}
	if target == staging {
		return nil, status.Error(codes.InvalidArgument, "target_path: must differ from staging_target_path")
	}
	c := req.GetVolumeCapability()
	if err := checkOneCapability("volume_capability", c); err != nil {
		return nil, err
	}
	defer d.locks.lock(id)()
	if _, err := d.volumeSize(id); err != nil {
		return nil, err
	}
	dev, err := d.mountedDevice(id, staging)
	if err != nil {
		return nil, err
	}
	if dev == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s: NodeStageVolume first", id, staging)
	}
	ro := req.GetReadonly() || readOnlyMode(c)

	ms, err := disk.MountsAt(target)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "mountinfo: %v", err)
	}
	for _, m := range ms {
		if disk.DeviceOf(m) != dev {
			return nil, status.Errorf(codes.AlreadyExists, "target_path %s already has another mount (%s %s)", target, m.FSType, m.Source)
		}
		if mountRO(m) != ro {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s is published at %s with readonly=%t, not %t", id, target, mountRO(m), ro)
		}
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		all, err := mountsOfDevice(dev)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		for _, m := range all {
			if m.MountPoint != staging {
				return nil, status.Errorf(codes.FailedPrecondition, "volume %s is single-writer and already published at %s", id, m.MountPoint)
			}
		}
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: target_path: %v", id, err)
	}
	if err := disk.BindMount(staging, target, ro); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	klog.InfoS("Published volume", "volume", id, "path", target, "readonly", ro)
	return &csi.NodePublishVolumeResponse{}, nil
}

// mountedDevice is the loop device of volume id mounted at path, or "" when
// none is.
func (d *Driver) mountedDevice(id, path string) (string, error) {
	devs, err := disk.LoopDevicesFor(d.imagePath(id))
	if err != nil {
		return "", status.Errorf(codes.Internal, "volume %s: loop devices: %v", id, err)
	}
	ms, err := disk.MountsAt(path)
	if err != nil {
		return "", status.Errorf(codes.Internal, "mountinfo: %v", err)
	}
	for _, m := range ms {
		dev := disk.DeviceOf(m)
		for _, v := range devs {
			if v == dev {
				return dev, nil
			}
		}
	}
	return "", nil
}

func mountRO(m disk.MountInfo) bool {
	for _, o := range strings.Split(m.Options, ",") {
		if o == "ro" {
			return true
		}
	}
	return false
}

// NodeUnpublishVolume unmounts the target path and removes it (the CSI
// spec gives its removal to the driver). Nothing there is success.
func (d *Driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if err := checkID("volume_id", id); err != nil {
		return nil, err
	}
	if err := checkPath("target_path", target); err != nil {
		return nil, err
	}
	defer d.locks.lock(id)()
	if err := disk.UnmountAll(target); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	// Remove, not RemoveAll: with the mount gone the directory is empty,
	// and anything else in it is not ours to delete.
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		if errors.Is(err, unix.ENOTDIR) {
			return &csi.NodeUnpublishVolumeResponse{}, nil
		}
		return nil, status.Errorf(codes.Internal, "volume %s: remove target_path: %v", id, err)
	}
	klog.InfoS("Unpublished volume", "volume", id, "path", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}
