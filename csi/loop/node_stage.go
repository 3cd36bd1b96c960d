package loop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"peapod/volumes/disk"
)

// NodeStageVolume mounts the attached loop device at the staging path:
// mkfs.ext4 on first use, e2fsck -p before every later mount (the kubelet's
// SafeFormatAndMount does the same), read-only for a reader-only access
// mode or a read-only attach.
func (d *Driver) NodeStageVolume(_ context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if err := checkID("volume_id", id); err != nil {
		return nil, err
	}
	if err := checkPath("staging_target_path", staging); err != nil {
		return nil, err
	}
	c := req.GetVolumeCapability()
	if err := checkOneCapability("volume_capability", c); err != nil {
		return nil, err
	}
	flags, data, err := mountOptions(c.GetMount().GetMountFlags())
	if err != nil {
		return nil, err
	}
	defer d.locks.lock(id)()
	if _, err := d.volumeSize(id); err != nil {
		return nil, err
	}
	dev, err := d.attachedDevice(id, req.GetPublishContext()[DevicePathKey])
	if err != nil {
		return nil, err
	}
	if done, err := mountedHere(staging, dev); err != nil || done {
		return &csi.NodeStageVolumeResponse{}, err
	}
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: staging_target_path: %v", id, err)
	}
	attachedRO, err := disk.LoopReadOnly(dev)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %s: %v", id, dev, err)
	}
	ro := readOnlyMode(c) || attachedRO
	if err := prepareFilesystem(dev, ro); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	if ro {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(dev, staging, fsType, flags, data); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: mount %s at %s: %v", id, dev, staging, err)
	}
	klog.InfoS("Staged volume", "volume", id, "device", dev, "path", staging, "readonly", ro)
	return &csi.NodeStageVolumeResponse{}, nil
}

// attachedDevice is the loop device volume id is attached to. want, from
// publish_context, is used only when it is such a device: a request must not
// get any other block device mounted.
func (d *Driver) attachedDevice(id, want string) (string, error) {
	devs, err := disk.LoopDevicesFor(d.imagePath(id))
	if err != nil {
		return "", status.Errorf(codes.Internal, "volume %s: loop devices: %v", id, err)
	}
	if len(devs) == 0 {
		return "", status.Errorf(codes.FailedPrecondition, "volume %s is not attached: ControllerPublishVolume first", id)
	}
	if want == "" {
		return devs[0], nil
	}
	if !slices.Contains(devs, want) {
		return "", status.Errorf(codes.InvalidArgument, "publish_context[%s] %q is not the loop device of volume %s (%s)", DevicePathKey, want, id, strings.Join(devs, ", "))
	}
	return want, nil
}

// mountedHere reports whether dev is already mounted at path (a retried
// call); another mount there is AlreadyExists.
func mountedHere(path, dev string) (bool, error) {
	ms, err := disk.MountsAt(path)
	if err != nil {
		return false, status.Errorf(codes.Internal, "mountinfo: %v", err)
	}
	for _, m := range ms {
		if disk.DeviceOf(m) == dev {
			return true, nil
		}
	}
	if len(ms) > 0 {
		return false, status.Errorf(codes.AlreadyExists, "%s already has another mount (%s %s)", path, ms[0].FSType, ms[0].Source)
	}
	return false, nil
}

// prepareFilesystem makes an ext4 filesystem on an empty device, or checks
// and repairs (e2fsck -p) the one there. Anything but ext4 is refused: the
// driver never formats over data.
func prepareFilesystem(dev string, ro bool) error {
	existing, found, err := disk.HasFilesystem(dev)
	if err != nil {
		return err
	}
	if !found {
		if ro {
			return fmt.Errorf("%s has no filesystem yet and is read-only", dev)
		}
		return disk.Format(dev, fsType)
	}
	if existing != fsType {
		return fmt.Errorf("%s holds %s, not %s", dev, existing, fsType)
	}
	if ro {
		return nil // e2fsck -p would write
	}
	if err := e2fsck(dev, "-p"); err != nil {
		return err
	}
	// Grow a filesystem smaller than its device (expanded while not
	// staged, or where online resize failed): offline, resize2fs needs no
	// privilege beyond the device, while online it needs CAP_SYS_RESOURCE.
	fsBytes, err := ext4Size(dev)
	if err != nil {
		return err
	}
	devBytes, err := disk.DeviceSize(dev)
	if err != nil {
		return err
	}
	if fsBytes >= devBytes {
		return nil
	}
	// resize2fs wants a filesystem checked since its last mount.
	if err := e2fsck(dev, "-f", "-p"); err != nil {
		return err
	}
	if out, err := exec.Command("resize2fs", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("resize2fs %s: %v: %s", dev, err, strings.TrimSpace(string(out)))
	}
	klog.InfoS("Grew the filesystem to its device", "device", dev, "from", fsBytes, "to", devBytes)
	return nil
}

// e2fsck checks dev; exit codes 1 (errors corrected) and 2 (corrected,
// reboot advised, which matters only for a mounted root) are success.
func e2fsck(dev string, args ...string) error {
	out, err := exec.Command("e2fsck", append(args, dev)...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() <= 2 {
		klog.InfoS("e2fsck repaired the filesystem", "device", dev, "output", strings.TrimSpace(string(out)))
		return nil
	}
	if err != nil {
		return fmt.Errorf("e2fsck %s %s: %v: %s", strings.Join(args, " "), dev, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ext4Size is the size of dev's ext4 filesystem in bytes (its superblock's
// block count times block size, from dumpe2fs -h).
func ext4Size(dev string) (int64, error) {
	out, err := exec.Command("dumpe2fs", "-h", dev).Output()
	if err != nil {
		return 0, fmt.Errorf("dumpe2fs -h %s: %w", dev, err)
	}
	var count, size int64
	for _, l := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch k {
		case "Block count":
			count, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		case "Block size":
			size, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if count <= 0 || size <= 0 {
		return 0, fmt.Errorf("dumpe2fs -h %s: no block count or size", dev)
	}
	return count * size, nil
}

// msFlags are the mount_flags that are mount(2) flags; any other flag goes
// to ext4 as an option (errors=remount-ro, discard...).
var msFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "rw": 0, "defaults": 0,
	"noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME, "relatime": unix.MS_RELATIME,
	"strictatime": unix.MS_STRICTATIME, "lazytime": unix.MS_LAZYTIME,
	"nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
	"sync": unix.MS_SYNCHRONOUS, "dirsync": unix.MS_DIRSYNC,
}

// mountOptions splits mount_flags into mount(2) flags and filesystem data.
// A flag with a comma would smuggle several options in one: refused.
func mountOptions(in []string) (uintptr, string, error) {
	var flags uintptr
	var data []string
	for i, f := range in {
		if f == "" || strings.ContainsAny(f, ", \t\n") {
			return 0, "", status.Errorf(codes.InvalidArgument, "volume_capability.mount.mount_flags[%d] %q: one option, no commas or spaces", i, f)
		}
		if v, ok := msFlags[f]; ok {
			flags |= v
			continue
		}
		data = append(data, f)
	}
	return flags, strings.Join(data, ","), nil
}

// NodeUnstageVolume unmounts the staging path. Nothing mounted there is
// success.
func (d *Driver) NodeUnstageVolume(_ context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if err := checkID("volume_id", id); err != nil {
		return nil, err
	}
	if err := checkPath("staging_target_path", staging); err != nil {
		return nil, err
	}
	defer d.locks.lock(id)()
	if err := disk.UnmountAll(staging); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	klog.InfoS("Unstaged volume", "volume", id, "path", staging)
	return &csi.NodeUnstageVolumeResponse{}, nil
}
