package loop

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"peapod/volumes/disk"
)

// ControllerPublishVolume is the attach: the disk file on a loop device
// (read-only when asked). The device path goes to the node in
// publish_context; a restarted driver finds the attach again in sysfs.
func (d *Driver) ControllerPublishVolume(_ context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkID("volume_id", id); err != nil {
		return nil, err
	}
	if req.GetNodeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "node_id is required")
	}
	if err := checkOneCapability("volume_capability", req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	defer d.locks.lock(id)()
	if _, err := d.volumeSize(id); err != nil {
		return nil, err
	}
	if req.GetNodeId() != d.opts.NodeID {
		return nil, status.Errorf(codes.NotFound, "node_id %q: this driver's disks attach to node %q only", req.GetNodeId(), d.opts.NodeID)
	}
	path := d.imagePath(id)
	ro := req.GetReadonly()

	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	devs, err := disk.LoopDevicesFor(path)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: loop devices: %v", id, err)
	}
	if len(devs) > 0 {
		attachedRO, err := disk.LoopReadOnly(devs[0])
		if err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %s: %v", id, devs[0], err)
		}
		if attachedRO != ro {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s is attached at %s with readonly=%t, not %t", id, devs[0], attachedRO, ro)
		}
		return publishContext(devs[0]), nil
	}
	if max := d.opts.MaxVolumesPerNode; max > 0 {
		n, err := d.attachedCount()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "count attached volumes: %v", err)
		}
		if int64(n) >= max {
			return nil, status.Errorf(codes.ResourceExhausted, "node %s has %d volumes attached, the maximum", d.opts.NodeID, n)
		}
	}
	dev, err := disk.LoopAttach(path, ro)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "attach volume %s: %v", id, err)
	}
	klog.InfoS("Attached volume", "volume", id, "device", dev, "readonly", ro)
	return publishContext(dev), nil
}

func publishContext(dev string) *csi.ControllerPublishVolumeResponse {
	return &csi.ControllerPublishVolumeResponse{PublishContext: map[string]string{DevicePathKey: dev}}
}

// attachedCount counts the loop devices backed by files in root.
func (d *Driver) attachedCount() (int, error) {
	root := d.opts.Root
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	ents, err := os.ReadDir(disk.SysBlockDir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		if bf, ok := disk.LoopBackingFile(e.Name()); ok && filepath.Dir(bf) == root {
			n++
		}
	}
	return n, nil
}

// ControllerUnpublishVolume detaches the loop device. One still mounted
// (NodeUnstageVolume has not run) is FailedPrecondition: clearing it would
// only mark it for autoclear and leave the file busy.
func (d *Driver) ControllerUnpublishVolume(_ context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkID("volume_id", id); err != nil {
		return nil, err
	}
	if n := req.GetNodeId(); n != "" && n != d.opts.NodeID {
		// Never attached there: already unpublished from that node.
		return &csi.ControllerUnpublishVolumeResponse{}, nil
	}
	defer d.locks.lock(id)()
	devs, err := disk.LoopDevicesFor(d.imagePath(id))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: loop devices: %v", id, err)
	}
	for _, dev := range devs {
		ms, err := mountsOfDevice(dev)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		if len(ms) > 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s: %s is still mounted at %s: NodeUnstageVolume first", id, dev, ms[0].MountPoint)
		}
		if err := disk.LoopDetach(dev); err != nil {
			return nil, status.Errorf(codes.Internal, "detach volume %s: %v", id, err)
		}
		klog.InfoS("Detached volume", "volume", id, "device", dev)
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

// mountsOfDevice returns every mount of block device dev (its own mounts
// and the bind mounts made from them).
func mountsOfDevice(dev string) ([]disk.MountInfo, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return nil, err
	}
	all, err := disk.ReadMountInfo()
	if err != nil {
		return nil, err
	}
	var out []disk.MountInfo
	for _, m := range all {
		if m.Major == unix.Major(st.Rdev) && m.Minor == unix.Minor(st.Rdev) {
			out = append(out, m)
		}
	}
	return out, nil
}

// ControllerExpandVolume grows the disk file (never shrinks it) and, when
// attached, tells the loop device; the node then grows the filesystem.
func (d *Driver) ControllerExpandVolume(_ context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkID("volume_id", id); err != nil {
		return nil, err
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity_range is required")
	}
	if c := req.GetVolumeCapability(); c != nil {
		if err := checkOneCapability("volume_capability", c); err != nil {
			return nil, err
		}
	}
	size, err := capacity(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	defer d.locks.lock(id)()
	cur, err := d.volumeSize(id)
	if err != nil {
		return nil, err
	}
	if cur >= req.GetCapacityRange().GetRequiredBytes() {
		if l := req.GetCapacityRange().GetLimitBytes(); l > 0 && cur > l {
			return nil, status.Errorf(codes.OutOfRange, "volume %s has %d bytes, above limit_bytes %d: volumes do not shrink", id, cur, l)
		}
		return &csi.ControllerExpandVolumeResponse{CapacityBytes: cur}, nil
	}
	path := d.imagePath(id)
	if err := os.Truncate(path, size); err != nil {
		return nil, status.Errorf(codes.Internal, "expand volume %s: %v", id, err)
	}
	devs, err := disk.LoopDevicesFor(path)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: loop devices: %v", id, err)
	}
	for _, dev := range devs {
		if err := disk.LoopSetCapacity(dev); err != nil {
			return nil, status.Errorf(codes.Internal, "expand volume %s: %v", id, err)
		}
	}
	klog.InfoS("Expanded volume", "volume", id, "from", cur, "to", size)
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: true}, nil
}
