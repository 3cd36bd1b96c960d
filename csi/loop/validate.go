package loop

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// MiB and GiB in bytes.
	MiB = int64(1) << 20
	GiB = int64(1) << 30

	// DefaultCapacity is a volume's size when CreateVolume gives no range.
	DefaultCapacity = 1 * GiB
	// MinCapacity: below this, mkfs.ext4's journal and metadata leave
	// next to nothing for the user.
	MinCapacity = 16 * MiB

	// fsType is the only filesystem the driver makes and mounts.
	fsType = "ext4"
)

// idPattern is the shape of volume ids and CreateVolume names. The first
// character excludes "." and "..", the set excludes "/", so an id is always
// a plain file name inside root.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// volumeID is the id of the volume CreateVolume names name: the name
// itself when it is a valid id (names from external-provisioner, pvc-<uuid>,
// are), otherwise "n-" and its SHA-256 in hex. Either way the same name
// gives the same id, so CreateVolume needs no name index to be idempotent.
func volumeID(name string) string {
	if idPattern.MatchString(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "n-" + hex.EncodeToString(sum[:])
}

// checkID checks a volume id (or name) taken from field of a request.
func checkID(field, id string) error {
	if id == "" {
		return status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	if !idPattern.MatchString(id) {
		return status.Errorf(codes.InvalidArgument, "%s %q: must match %s", field, id, idPattern)
	}
	return nil
}

// checkPath checks a staging or target path: the CO chooses where it is,
// but it must be absolute and clean ("/a/../b" and "a/b" are refused, not
// cleaned, so the driver never mounts somewhere other than where it was
// told).
func checkPath(field, p string) error {
	if p == "" {
		return status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	if !filepath.IsAbs(p) {
		return status.Errorf(codes.InvalidArgument, "%s %q: must be an absolute path", field, p)
	}
	if filepath.Clean(p) != p || p == "/" {
		return status.Errorf(codes.InvalidArgument, "%s %q: must be a clean path below /", field, p)
	}
	return nil
}

// capacity picks a volume size for r: the required bytes (or the default,
// at least MinCapacity) rounded up to a MiB, within the limit. A range that
// cannot be met is OutOfRange.
func capacity(r *csi.CapacityRange) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 {
		return 0, status.Errorf(codes.InvalidArgument, "capacity_range: negative bytes (required %d, limit %d)", req, lim)
	}
	if lim > 0 && req > lim {
		return 0, status.Errorf(codes.InvalidArgument, "capacity_range: required_bytes %d exceeds limit_bytes %d", req, lim)
	}
	want := req
	if want == 0 {
		want = DefaultCapacity
		if lim > 0 && lim < want {
			want = lim
		}
	}
	size := max(roundUp(want, MiB), MinCapacity)
	if lim > 0 && size > lim {
		// Round to the loop device's 512-byte sectors instead of a MiB.
		size = max(roundUp(want, 512), MinCapacity)
		if size > lim {
			return 0, status.Errorf(codes.OutOfRange, "capacity_range: limit_bytes %d is below the smallest volume, %d bytes", lim, MinCapacity)
		}
	}
	return size, nil
}

// fits reports whether an existing volume of size bytes satisfies r.
func fits(size int64, r *csi.CapacityRange) bool {
	if r.GetRequiredBytes() > size {
		return false
	}
	return r.GetLimitBytes() == 0 || size <= r.GetLimitBytes()
}

func roundUp(n, unit int64) int64 { return (n + unit - 1) / unit * unit }

// checkCapability says why the driver cannot serve c ("" when it can): a
// filesystem volume (ext4), used from this one node.
func checkCapability(c *csi.VolumeCapability) string {
	if c == nil {
		return "a volume capability is nil"
	}
	switch {
	case c.GetMount() != nil:
		if t := c.GetMount().GetFsType(); t != "" && t != fsType {
			return fmt.Sprintf("fs_type %q is not supported (only %s)", t, fsType)
		}
	case c.GetBlock() != nil:
		return "access_type block is not supported (only mount)"
	default:
		return "access_type is required (mount)"
	}
	switch m := c.GetAccessMode().GetMode(); m {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
		return ""
	case csi.VolumeCapability_AccessMode_UNKNOWN:
		return "access_mode is required"
	default:
		return fmt.Sprintf("access_mode %s is not supported: the disk is local to one node", m)
	}
}

// checkCapabilities checks the volume_capabilities of a request.
func checkCapabilities(field string, cs []*csi.VolumeCapability) error {
	if len(cs) == 0 {
		return status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	for i, c := range cs {
		if why := checkCapability(c); why != "" {
			return status.Errorf(codes.InvalidArgument, "%s[%d]: %s", field, i, why)
		}
	}
	return nil
}

// checkOneCapability checks the volume_capability of a node or publish
// request.
func checkOneCapability(field string, c *csi.VolumeCapability) error {
	if c == nil {
		return status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	if why := checkCapability(c); why != "" {
		return status.Errorf(codes.InvalidArgument, "%s: %s", field, why)
	}
	return nil
}

// readOnlyMode reports whether c's access mode allows no writes.
func readOnlyMode(c *csi.VolumeCapability) bool {
	m := c.GetAccessMode().GetMode()
	return m == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY ||
		m == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
}
