package loop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/klog/v2"

	"peapod/volumes/disk"
)

func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
		csi.ControllerServiceCapability_RPC_PUBLISH_READONLY,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// CreateVolume makes <root>/<id>.img (id from the name, see volumeID), a
// sparse file of the requested capacity. The same name again is the same volume when its size fits the
// new range, AlreadyExists when it does not.
func (d *Driver) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	name := volumeID(req.GetName())
	if err := checkCapabilities("volume_capabilities", req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Error(codes.InvalidArgument, "volume_content_source: snapshots and clones are not supported")
	}
	if !d.accessible(req.GetAccessibilityRequirements().GetRequisite()) {
		return nil, status.Errorf(codes.ResourceExhausted, "accessibility_requirements.requisite: the disks of this driver live on node %q only", d.opts.NodeID)
	}
	size, err := capacity(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	defer d.locks.lock(name)()

	path := d.imagePath(name)
	if st, err := os.Stat(path); err == nil {
		if !fits(st.Size(), req.GetCapacityRange()) {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s exists with %d bytes, outside capacity_range (required %d, limit %d)",
				name, st.Size(), req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes())
		}
		return &csi.CreateVolumeResponse{Volume: d.volume(name, st.Size())}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", name, err)
	}
	if err := createSparse(path, size); err != nil {
		return nil, status.Errorf(codes.Internal, "create volume %s: %v", name, err)
	}
	klog.InfoS("Created volume", "volume", name, "bytes", size)
	return &csi.CreateVolumeResponse{Volume: d.volume(name, size)}, nil
}

// createSparse makes path a sparse file of size bytes, atomically: a crash
// leaves either no volume or the whole one (the temporary name starts with a
// dot, which no volume id does, so ListVolumes never shows it).
func createSparse(path string, size int64) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	_ = os.Remove(tmp) // left by a crash
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func (d *Driver) volume(id string, size int64) *csi.Volume {
	return &csi.Volume{VolumeId: id, CapacityBytes: size, AccessibleTopology: []*csi.Topology{d.topology()}}
}

// accessible reports whether one of the requisite topologies is this node
// (no requisite: anywhere will do).
func (d *Driver) accessible(requisite []*csi.Topology) bool {
	if len(requisite) == 0 {
		return true
	}
	for _, t := range requisite {
		if t.GetSegments()[TopologyKey] == d.opts.NodeID {
			return true
		}
	}
	return false
}

// DeleteVolume removes the disk file; a volume still attached is
// FailedPrecondition, a missing one success.
func (d *Driver) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if !idPattern.MatchString(id) {
		// Not an id this driver could have made: nothing to delete.
		return &csi.DeleteVolumeResponse{}, nil
	}
	defer d.locks.lock(id)()
	path := d.imagePath(id)
	devs, err := disk.LoopDevicesFor(path)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: loop devices: %v", id, err)
	}
	if len(devs) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is attached at %s: ControllerUnpublishVolume first", id, strings.Join(devs, ", "))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "delete volume %s: %v", id, err)
	}
	klog.InfoS("Deleted volume", "volume", id)
	return &csi.DeleteVolumeResponse{}, nil
}

// volumeSize is the size of volume id's file; a missing file is NotFound.
func (d *Driver) volumeSize(id string) (int64, error) {
	st, err := os.Stat(d.imagePath(id))
	if errors.Is(err, os.ErrNotExist) {
		return 0, status.Errorf(codes.NotFound, "volume %s not found", id)
	}
	if err != nil {
		return 0, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	return st.Size(), nil
}

func (d *Driver) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if err := checkID("volume_id", id); err != nil {
		return nil, err
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities is required")
	}
	if _, err := d.volumeSize(id); err != nil {
		return nil, err
	}
	for i, c := range req.GetVolumeCapabilities() {
		if why := checkCapability(c); why != "" {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf("volume_capabilities[%d]: %s", i, why)}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// ListVolumes lists the disk files in id order; the token is the index of
// the next entry.
func (d *Driver) ListVolumes(_ context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "max_entries %d: must not be negative", req.GetMaxEntries())
	}
	ids, err := d.volumeIDs()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "list volumes: %v", err)
	}
	start := 0
	if tok := req.GetStartingToken(); tok != "" {
		start, err = strconv.Atoi(tok)
		if err != nil || start < 0 || start > len(ids) {
			return nil, status.Errorf(codes.Aborted, "starting_token %q is not valid (volumes may have been deleted meanwhile)", tok)
		}
	}
	end := len(ids)
	if n := int(req.GetMaxEntries()); n > 0 && start+n < end {
		end = start + n
	}
	resp := &csi.ListVolumesResponse{}
	for _, id := range ids[start:end] {
		st, err := os.Stat(d.imagePath(id))
		if err != nil {
			continue // deleted meanwhile
		}
		e := &csi.ListVolumesResponse_Entry{Volume: d.volume(id, st.Size()), Status: &csi.ListVolumesResponse_VolumeStatus{}}
		if devs, _ := disk.LoopDevicesFor(d.imagePath(id)); len(devs) > 0 {
			e.Status.PublishedNodeIds = []string{d.opts.NodeID}
		}
		resp.Entries = append(resp.Entries, e)
	}
	if end < len(ids) {
		resp.NextToken = strconv.Itoa(end)
	}
	return resp, nil
}

// volumeIDs are the ids of the disk files under root, sorted.
func (d *Driver) volumeIDs() ([]string, error) {
	ents, err := os.ReadDir(d.opts.Root)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), imageSuffix)
		if ok && e.Type().IsRegular() && idPattern.MatchString(id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// GetCapacity is the free space of the filesystem holding root. The files
// are sparse, so this is what can still be written, not a reservation.
func (d *Driver) GetCapacity(_ context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	if t := req.GetAccessibleTopology(); t != nil && t.GetSegments()[TopologyKey] != d.opts.NodeID {
		return &csi.GetCapacityResponse{}, nil
	}
	for _, c := range req.GetVolumeCapabilities() {
		if checkCapability(c) != "" {
			return &csi.GetCapacityResponse{}, nil
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(d.opts.Root, &st); err != nil {
		return nil, status.Errorf(codes.Internal, "statfs %s: %v", d.opts.Root, err)
	}
	return &csi.GetCapacityResponse{
		AvailableCapacity: int64(st.Bavail) * st.Bsize,
		MinimumVolumeSize: wrapperspb.Int64(MinCapacity),
	}, nil
}
