package loop

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"peapod/volumes/disk"
)

func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{
		NodeId:             d.opts.NodeID,
		MaxVolumesPerNode:  d.opts.MaxVolumesPerNode,
		AccessibleTopology: d.topology(),
	}, nil
}

func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: t}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// publishedDevice is the loop device of volume id mounted at path (a
// staging or target path). A volume or path that is not there is NotFound.
func (d *Driver) publishedDevice(id, path string) (string, error) {
	if err := checkID("volume_id", id); err != nil {
		return "", err
	}
	if path == "" {
		return "", status.Error(codes.InvalidArgument, "volume_path is required")
	}
	if _, err := d.volumeSize(id); err != nil {
		return "", err
	}
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return "", status.Errorf(codes.NotFound, "volume_path %q: not an absolute clean path, so volume %s is not there", path, id)
	}
	dev, err := d.mountedDevice(id, path)
	if err != nil {
		return "", err
	}
	if dev == "" {
		return "", status.Errorf(codes.NotFound, "volume %s is not mounted at %s", id, path)
	}
	return dev, nil
}

func (d *Driver) NodeGetVolumeStats(_ context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	path := req.GetVolumePath()
	if _, err := d.publishedDevice(req.GetVolumeId(), path); err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, status.Errorf(codes.Internal, "statfs %s: %v", path, err)
	}
	bs := st.Bsize
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: int64(st.Blocks) * bs, Available: int64(st.Bavail) * bs, Used: int64(st.Blocks-st.Bfree) * bs},
		{Unit: csi.VolumeUsage_INODES, Total: int64(st.Files), Available: int64(st.Ffree), Used: int64(st.Files - st.Ffree)},
	}}, nil
}

// NodeExpandVolume grows the mounted ext4 to the loop device's size, online
// (resize2fs), after making the device re-read its file's size.
func (d *Driver) NodeExpandVolume(_ context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	if c := req.GetVolumeCapability(); c != nil {
		if err := checkOneCapability("volume_capability", c); err != nil {
			return nil, err
		}
	}
	if err := checkID("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	defer d.locks.lock(req.GetVolumeId())()
	id := req.GetVolumeId()
	dev, err := d.publishedDevice(id, req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	if err := disk.LoopSetCapacity(dev); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	if out, err := exec.Command("resize2fs", dev).CombinedOutput(); err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "Permission denied") {
			// EXT4_IOC_RESIZE_FS: the kernel wants CAP_SYS_RESOURCE, which
			// some hosts withhold. NodeStageVolume grows it offline.
			msg += " (online resize needs CAP_SYS_RESOURCE; the filesystem grows at the next NodeStageVolume)"
		}
		return nil, status.Errorf(codes.Internal, "volume %s: resize2fs %s: %v: %s", id, dev, err, msg)
	}
	size, err := disk.DeviceSize(dev)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	if req.GetCapacityRange().GetRequiredBytes() > size {
		return nil, status.Errorf(codes.OutOfRange, "volume %s: device has %d bytes, capacity_range.required_bytes %d: ControllerExpandVolume first", id, size, req.GetCapacityRange().GetRequiredBytes())
	}
	klog.InfoS("Expanded filesystem", "volume", id, "device", dev, "bytes", size)
	return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}
