package volumes

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
)

// Controller attach (node mode). With an API server the node is
// registered with volumes.kubernetes.io/controller-managed-attach-detach:
// the attach/detach controller makes a VolumeAttachment for every
// attachable volume a pod on this node uses, the external-attacher calls
// ControllerPublishVolume and writes status.attached and
// status.attachmentMetadata, and the node only waits, as the kubelet's
// csiAttacher.WaitForAttach does; the attachment's metadata is the
// publish_context of NodeStage and NodePublish (csiPlugin
// .getPublishContext). Detach is the controller's too: it waits for the
// volume to leave the node's status.volumesInUse (VolumesInUse), so the
// agent never calls ControllerPublish/UnpublishVolume in this mode.
//
// A CSI volume needs an attach when its CSIDriver object says
// attachRequired (or there is no CSIDriver object, as the kubelet assumes).
// Then, node-wide, before NodeStageVolume:
//
//	      reported in the Node's            VolumeAttachment csi-<sha256(handle+driver+node)>
//	      status.volumesInUse               status.attached
//	(wanted) ─────────────────► IN USE ────────────────────────────────► ATTACHED ──► NodeStage …
//	   "not yet reported in use"  │  not found / not attached yet: "waiting for VolumeAttachment …"
//	                              │  status.attachError: its message; being deleted: said so
//	                              └─ each a FailedMount, retried with the reconciler's back-off
//
// The first step is the kubelet's reportedInUse: the controller must know
// the node uses the volume before it is mounted, or it could detach it
// under the mount (a pod deleted and another started in the same status
// period).

// ControllerAttach is what the Manager needs of the API server in node
// mode (Options.ControllerAttach); volumes itself links no API client.
type ControllerAttach interface {
	// CSIDriver is the spec of the CSIDriver object of driver, nil when
	// there is none (the kubelet's defaults: attach required, no pod info
	// on mount, fsGroupPolicy ReadWriteOnceWithFSType).
	CSIDriver(driver string) (*storagev1.CSIDriverSpec, error)
	// VolumeAttachment GETs the VolumeAttachment named name; nil and no
	// error when there is none.
	VolumeAttachment(ctx context.Context, name string) (*storagev1.VolumeAttachment, error)
	// ReportedInUse says whether the Node, as the API server has it,
	// lists name in status.volumesInUse. It may ask for a status update
	// when it does not.
	ReportedInUse(name v1.UniqueVolumeName) bool
}

// AttachmentName is the name of the VolumeAttachment of a CSI volume on a
// node, as the attach/detach controller and the kubelet name it
// (pkg/volume/csi getAttachmentName).
func AttachmentName(volumeHandle, driver, nodeName string) string {
	return fmt.Sprintf("csi-%x", sha256.Sum256([]byte(volumeHandle+driver+nodeName)))
}

// csiUniqueName is the kubelet's unique volume name of a CSI persistent
// volume, what status.volumesInUse and volumesAttached list:
// kubernetes.io/csi/<driver>^<volumeHandle>.
func csiUniqueName(driver, handle string) v1.UniqueVolumeName {
	return v1.UniqueVolumeName("kubernetes.io/csi/" + driver + "^" + handle)
}

// controllerAttached: in node mode, does driver's volume wait for a
// VolumeAttachment? Static mode (no ControllerAttach) answers false.
func (m *Manager) controllerAttached(driver string) (bool, error) {
	if m.opts.ControllerAttach == nil {
		return false, nil
	}
	spec, err := m.opts.ControllerAttach.CSIDriver(driver)
	if err != nil {
		return false, fmt.Errorf("CSIDriver %s: %w", driver, err)
	}
	return spec == nil || spec.AttachRequired == nil || *spec.AttachRequired, nil
}

var (
	// errNotAttachedYet: the VolumeAttachment is not attached yet.
	errNotAttachedYet = errors.New("not attached yet")
	// errNoAttachment: there is no VolumeAttachment yet.
	errNoAttachment = errors.New("it does not exist yet")
)

// csiWaitForAttach is one look at the volume's VolumeAttachment; attached,
// its metadata becomes the volume's publish context.
func (m *Manager) csiWaitForAttach(ctx context.Context, vs *volumeSpec, sv *csiStaged) error {
	name := AttachmentName(vs.CSI.VolumeHandle, vs.CSI.Driver, m.nodeName)
	ok, err := vaAttached(m.opts.ControllerAttach.VolumeAttachment(ctx, name))
	switch {
	case errors.Is(err, errNoAttachment):
		return fmt.Errorf("waiting for VolumeAttachment %s (%s, node %s) to be attached: %w", name, vs.CSI.Driver, m.nodeName, err)
	case errors.Is(err, errNotAttachedYet):
		return fmt.Errorf("waiting for VolumeAttachment %s (%s, node %s) to be attached", name, vs.CSI.Driver, m.nodeName)
	case err != nil:
		return fmt.Errorf("VolumeAttachment %s (%s, node %s): %w", name, vs.CSI.Driver, m.nodeName, err)
	}
	sv.PublishContext, sv.Attached = ok.Status.AttachmentMetadata, true
	return m.saveCSI(sv)
}

// vaAttached is the kubelet's verifyAttachmentStatus on a GET's result.
func vaAttached(va *storagev1.VolumeAttachment, err error) (*storagev1.VolumeAttachment, error) {
	switch {
	case err != nil:
		return nil, err
	case va == nil:
		return nil, errNoAttachment
	case va.DeletionTimestamp != nil:
		return nil, errors.New("the VolumeAttachment is being deleted")
	case va.Status.Attached:
		return va, nil
	case va.Status.AttachError != nil:
		return nil, errors.New(va.Status.AttachError.Message)
	}
	return nil, errNotAttachedYet
}

// csiCheckInUse: the volume is in the Node's reported volumesInUse.
func (m *Manager) csiCheckInUse(vs *volumeSpec) error {
	name := csiUniqueName(vs.CSI.Driver, vs.CSI.VolumeHandle)
	if m.opts.ControllerAttach.ReportedInUse(name) {
		return nil
	}
	return fmt.Errorf("volume %s is not yet reported in use in node %s's status.volumesInUse", name, m.nodeName)
}

// inUse is the Manager's status.volumesInUse, kept apart from its lock:
// the node status loop must not wait for a long NodeStageVolume.
type inUse struct {
	mu     sync.Mutex
	names  []v1.UniqueVolumeName
	synced bool
}

// VolumesInUse returns the unique names of the attachable volumes pods on
// this node use or may still have mounted (the kubelet's GetVolumesInUse:
// desired and actual state): every CSI persistent volume of a pod the
// Manager holds (desired, terminating, or rebuilt after a restart) or
// still staged, whose driver needs an attach, sorted. ok is false until
// the state from before a restart is rebuilt (the kubelet's
// ReconcilerStatesHasBeenSynced): the caller leaves the field as it is.
func (m *Manager) VolumesInUse() (names []v1.UniqueVolumeName, ok bool) {
	m.inUse.mu.Lock()
	defer m.inUse.mu.Unlock()
	return slices.Clone(m.inUse.names), m.inUse.synced
}

// updateInUseLocked recomputes VolumesInUse from the pods and the
// node-wide records (m.mu held). A driver whose CSIDriver cannot be read
// counts as attachable: reporting too much only delays a detach.
func (m *Manager) updateInUseLocked() {
	set := map[v1.UniqueVolumeName]bool{}
	add := func(driver, handle string) {
		if req, err := m.controllerAttached(driver); err != nil || req || m.opts.ControllerAttach == nil {
			set[csiUniqueName(driver, handle)] = true
		}
	}
	for _, pe := range m.pods {
		for _, vs := range pe.volumes {
			if vs.Kind == kindCSI && !vs.CSI.Ephemeral {
				add(vs.CSI.Driver, vs.CSI.VolumeHandle)
			}
		}
	}
	for _, sv := range m.csi.staged {
		add(sv.Driver, sv.VolumeHandle)
	}
	names := make([]v1.UniqueVolumeName, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	slices.Sort(names)
	m.inUse.mu.Lock()
	m.inUse.names, m.inUse.synced = names, true
	m.inUse.mu.Unlock()
}
