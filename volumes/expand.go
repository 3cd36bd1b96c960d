package volumes

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// Online expansion, the node half (the kubelet's NodeExpander and CSI
// expander): once the controller side (external-resizer,
// ControllerExpandVolume) has grown the disk, the filesystem on it is
// grown where the volume is mounted, NodeExpandVolume with the pod's
// publish path and the node-wide staging path. Who decides that a volume
// needs it (the claim's allocatedResourceStatuses) and who writes the
// claim's status afterwards is the agent's business, as the kubelet's
// volume manager; this is the step itself, with the reconciler's back-off.

// notMountedError: the pod's volume is not set up (yet, or any more) on
// this node; the expansion waits for it. Callers outside the package ask
// the error for NotMounted() rather than import this package.
type notMountedError struct {
	uid  types.UID
	name string
}

func (e *notMountedError) Error() string {
	return fmt.Sprintf("pod %s volume %q: not mounted on this node", e.uid, e.name)
}
func (e *notMountedError) NotMounted() bool { return true }

// finalError wraps a driver's answer that says the call is over, not in
// flight (every gRPC code but Canceled, DeadlineExceeded, Unavailable,
// ResourceExhausted and Aborted: the kubelet's isFinalError); infeasible
// ones (InvalidArgument, OutOfRange, NotFound) say that a retry with the
// same size cannot succeed. The kubelet marks a claim NodeResizeError for
// the first, NodeResizeInfeasible for the second. Callers ask the error
// for Final() and Infeasible() rather than import this package.
type finalError struct {
	err        error
	infeasible bool
}

func (e *finalError) Error() string    { return e.err.Error() }
func (e *finalError) Unwrap() error    { return e.err }
func (e *finalError) Final() bool      { return true }
func (e *finalError) Infeasible() bool { return e.infeasible }

// expandError classifies a NodeExpandVolume failure.
func expandError(err error, handle string, size int64) error {
	err = fmt.Errorf("NodeExpandVolume %s to %d bytes: %w", handle, size, err)
	st, ok := status.FromError(errors.Unwrap(err))
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.Unavailable, codes.ResourceExhausted, codes.Aborted:
		return err
	case codes.InvalidArgument, codes.OutOfRange, codes.NotFound:
		return &finalError{err: err, infeasible: true}
	}
	return &finalError{err: err}
}

// ExpandVolume grows the filesystem of the CSI volume name of pod uid to
// newSize bytes. It answers false, nil when the driver has no node
// expansion (the controller's was all there was to do) and true, nil when
// NodeExpandVolume succeeded. A failure backs off as the other operations;
// while it does, the error answers BackingOff() true.
func (m *Manager) ExpandVolume(ctx context.Context, uid types.UID, name string, newSize int64) (bool, error) {
	if newSize <= 0 {
		return false, fmt.Errorf("volume %q: expand to %d bytes: the size must be positive", name, newSize)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	pe := m.pods[uid]
	if pe == nil || pe.terminating || pe.held {
		return false, &notMountedError{uid, name}
	}
	var vs *volumeSpec
	for _, v := range pe.volumes {
		if v.Name == name {
			vs = v
		}
	}
	if vs == nil {
		return false, fmt.Errorf("pod %s has no volume %q", uid, name)
	}
	if st := pe.state[name]; st == nil || !st.ready {
		return false, &notMountedError{uid, name}
	}
	if vs.Kind != kindCSI || vs.CSI.Ephemeral {
		return false, fmt.Errorf("pod %s volume %q (%s): online expansion needs a CSI persistent volume", uid, name, vs.Plugin)
	}
	d, err := m.csiDriver(vs.CSI.Driver)
	if err != nil {
		return false, err
	}
	if !d.ExpandVolume {
		return false, nil
	}
	key := "expand/" + string(uid) + "/" + name
	err = m.do(key, "expand", vs.Plugin, func() error {
		secrets, err := m.csiSecrets(vs.CSI.ExpandSecretRef)
		if err != nil {
			return err
		}
		req := &csi.NodeExpandVolumeRequest{
			VolumeId:         vs.CSI.VolumeHandle,
			VolumePath:       m.csiTarget(uid, vs),
			CapacityRange:    &csi.CapacityRange{RequiredBytes: newSize},
			VolumeCapability: csiCapability(d, vs.CSI),
			Secrets:          secrets,
		}
		if d.StageUnstage {
			req.StagingTargetPath = vs.GlobalPath
		}
		cctx, cancel := context.WithTimeout(ctx, csiCallTimeout)
		defer cancel()
		resp, err := d.Node.NodeExpandVolume(cctx, req)
		if err != nil {
			return expandError(err, vs.CSI.VolumeHandle, newSize)
		}
		klog.InfoS("Volume expanded on the node", "pod", uid, "volume", name, "volumeHandle", vs.CSI.VolumeHandle,
			"requiredBytes", newSize, "capacityBytes", resp.GetCapacityBytes(), "path", filepath.Dir(req.VolumePath))
		return nil
	})
	if err != nil {
		return false, err
	}
	return true, nil
}
