package spec

import (
	"math"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// UserNS is a pod's user namespace (CRI NamespaceMode POD, `hostUsers:
// false`): the uid and gid mappings the kubelet chose for the pod
// (container id → host id), one range each that maps container id 0.
// The zero value is the host's user namespace (mode NODE, or no option).
type UserNS struct {
	UIDs, GIDs []specs.LinuxIDMapping
}

// Enabled reports whether the pod has a user namespace of its own.
func (u UserNS) Enabled() bool { return len(u.UIDs) > 0 }

// HostRoot is the host uid and gid that container root (0) maps to: the
// owner of the files peapod lays out for the pod (the rootfs upper dir).
func (u UserNS) HostRoot() (uid, gid int) {
	return int(hostID(u.UIDs, 0)), int(hostID(u.GIDs, 0))
}

// HostID maps container id in m to the host id (math.MaxUint32 when
// unmapped).
func HostID(m []specs.LinuxIDMapping, id uint32) uint32 { return hostID(m, id) }

func hostID(m []specs.LinuxIDMapping, id uint32) uint32 {
	for _, r := range m {
		if id >= r.ContainerID && uint64(id) < uint64(r.ContainerID)+uint64(r.Size) {
			return r.HostID + (id - r.ContainerID)
		}
	}
	return math.MaxUint32
}

// PodUserNS validates the CRI UserNamespace of a sandbox (or of a
// container, which must then match its sandbox's) the way containerd's CRI
// plugin does: NODE (or nil) is the host's user namespace and takes no
// mappings; POD takes exactly one uid and one gid range, each mapping
// container id 0, with a non-zero length that stays
// within 32 bits; CONTAINER and TARGET are refused. Errors are
// *FieldError naming field (e.g.
// "linux.security_context.namespace_options.userns_options").
func PodUserNS(u *runtimeapi.UserNamespace, field string) (UserNS, error) {
	if u == nil {
		// Not "POD": the zero mode is POD, an absent option is the host's.
		return UserNS{}, nil
	}
	switch u.GetMode() {
	case runtimeapi.NamespaceMode_NODE:
		if len(u.GetUids()) > 0 || len(u.GetGids()) > 0 {
			return UserNS{}, fieldErr(field, "uids/gids mappings are only valid with mode POD, got mode NODE")
		}
		return UserNS{}, nil
	case runtimeapi.NamespaceMode_POD:
	default:
		return UserNS{}, fieldErr(field+".mode", "unsupported user namespace mode %s (NODE or POD)", u.GetMode())
	}
	uids, err := idMappings(u.GetUids(), field+".uids")
	if err != nil {
		return UserNS{}, err
	}
	gids, err := idMappings(u.GetGids(), field+".gids")
	if err != nil {
		return UserNS{}, err
	}
	return UserNS{UIDs: uids, GIDs: gids}, nil
}

func idMappings(in []*runtimeapi.IDMapping, field string) ([]specs.LinuxIDMapping, error) {
	if len(in) != 1 {
		// The kubelet gives one range per pod; several ranges could map
		// one container id twice and have no agreed meaning for idmapped
		// volumes (containerd refuses them too).
		return nil, fieldErr(field, "exactly one mapping is supported, got %d", len(in))
	}
	m := in[0]
	switch {
	case m.GetContainerId() != 0:
		return nil, fieldErr(field+"[0].container_id", "must be 0 (container root must be mapped), got %d", m.GetContainerId())
	case m.GetLength() == 0:
		return nil, fieldErr(field+"[0].length", "must not be 0")
	case uint64(m.GetHostId())+uint64(m.GetLength()) > math.MaxUint32:
		return nil, fieldErr(field+"[0]", "host range %d+%d exceeds 32-bit ids", m.GetHostId(), m.GetLength())
	}
	return []specs.LinuxIDMapping{{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetLength()}}, nil
}

// ociIDMappings renders CRI mappings for an OCI mount.
func ociIDMappings(in []*runtimeapi.IDMapping) []specs.LinuxIDMapping {
	out := make([]specs.LinuxIDMapping, 0, len(in))
	for _, m := range in {
		out = append(out, specs.LinuxIDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetLength()})
	}
	return out
}

// idmapMount gives a per-pod file peapod wrote (hosts, hostname,
// resolv.conf: host root's) the pod's mapping, so container root owns it
// as it does without a user namespace.
func idmapMount(m *specs.Mount, u UserNS) {
	m.UIDMappings = append([]specs.LinuxIDMapping(nil), u.UIDs...)
	m.GIDMappings = append([]specs.LinuxIDMapping(nil), u.GIDs...)
	m.Options = append(m.Options, "idmap")
}
