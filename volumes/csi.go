package volumes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"peapod/volumes/csiplugin"
)

// CSI volumes, the node half of the kubelet's CSI plugin (pkg/volume/csi:
// csi_attacher.go MountDevice/UnmountDevice, csi_mounter.go
// SetUpAt/TearDownAt), as steps of the reconciler. Drivers come from the
// plugin watcher (csiplugin.Registry, Options.CSIDrivers).
//
// A CSI persistent volume is node-wide, keyed csi:<driver>:<handle>, and
// shared by every pod that uses it:
//
//	        ControllerPublishVolume            NodeStageVolume
//	(absent) ─────────────────────► ATTACHED ─────────────────► STAGED (<GlobalMountDir>/kubernetes.io/csi/
//	         ◄───────────────────── ATTACHED ◄───────────────── STAGED   <driver>/<sha256(handle)>/globalmount)
//	        ControllerUnpublishVolume          NodeUnstageVolume
//	                                  (only when no pod, desired or terminating, uses it)
//
// then, per pod, NodePublishVolume at
// <PodsDir>/<uid>/volumes/kubernetes.io~csi/<pv>/mount (vol_data.json
// beside it, as the kubelet writes it, so teardown needs no record), and
// NodeUnpublishVolume at teardown.
//
// Attach. The kubelet never calls ControllerPublishVolume: the
// external-attacher does, for a VolumeAttachment the attach/detach
// controller made, and the kubelet waits for it. In node mode the agent
// does the same (attach.go, Options.ControllerAttach): ATTACHED above is
// then "the VolumeAttachment is attached", its attachmentMetadata the
// publish_context, and the detach is the controller's. Static pods have
// neither controller nor attacher:
// peapod-csi-loop's attach is the losetup (ControllerPublishVolume returns
// the loop device in publish_context, NodeStageVolume refuses a volume
// not attached), and its disks live on this node only, so the agent calls
// ControllerPublishVolume itself, with this node's id (NodeGetInfo), when
// the driver serves the controller service on its node endpoint with
// PUBLISH_UNPUBLISH_VOLUME; ControllerUnpublishVolume follows the unstage.
// A driver that serves no controller service there needs no attach as far
// as the agent can tell (the kubelet asks the CSIDriver object, which
// static pods do not have); if its NodeStageVolume then fails with
// FailedPrecondition, the error says that an attach the agent cannot do
// may be missing.
//
// Stage happens only with the STAGE_UNSTAGE_VOLUME node capability.
// Inline (ephemeral) CSI volumes are published without attach or stage.
// Records of node-wide volumes are kept in StateDir/csi/, written before
// the first call to the driver, so a restart can still unstage and detach;
// a published pod volume is adopted after a restart from mountinfo alone.

const (
	kindCSI          = "csi"
	csiDirName       = "kubernetes.io~csi"
	csiPluginPrefix  = "kubernetes.io/csi:"
	csiVolDataFile   = "vol_data.json"
	csiCallTimeout   = 2 * time.Minute // mkfs of a big disk happens in NodeStage
	csiStatsTimeout  = 5 * time.Second
	csiEphemeralKey  = "csi.storage.k8s.io/ephemeral"
	csiPodNameKey    = "csi.storage.k8s.io/pod.name"
	csiPodNSKey      = "csi.storage.k8s.io/pod.namespace"
	csiPodUIDKey     = "csi.storage.k8s.io/pod.uid"
	csiSAKey         = "csi.storage.k8s.io/serviceAccount.name"
	csiTokensKey     = "csi.storage.k8s.io/serviceAccount.tokens"
	csiModePersist   = "Persistent"
	csiModeEphemeral = "Ephemeral"
)

// csiDriverName: the CSI spec's plugin name (63 characters at most,
// alphanumerics, '-', '_', '.'); it becomes a path element.
var csiDriverName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)

// csiVolume is a CSI volume source after resolution.
type csiVolume struct {
	Driver       string `json:"driver"`
	VolumeHandle string `json:"volumeHandle"`
	FSType       string `json:"fsType,omitempty"`
	// AttachReadOnly is the PV's spec.csi.readOnly: attach and publish
	// read-only (the claim's readOnly only publishes read-only).
	AttachReadOnly      bool                            `json:"attachReadOnly,omitempty"`
	Attributes          map[string]string               `json:"attributes,omitempty"`
	ControllerSecretRef *v1.SecretReference             `json:"controllerSecretRef,omitempty"`
	StageSecretRef      *v1.SecretReference             `json:"stageSecretRef,omitempty"`
	PublishSecretRef    *v1.SecretReference             `json:"publishSecretRef,omitempty"`
	ExpandSecretRef     *v1.SecretReference             `json:"expandSecretRef,omitempty"`
	AccessModes         []v1.PersistentVolumeAccessMode `json:"accessModes,omitempty"`
	MountOptions        []string                        `json:"mountOptions,omitempty"`
	Ephemeral           bool                            `json:"ephemeral,omitempty"`
}

func (c *csiVolume) key() string { return "csi:" + c.Driver + ":" + c.VolumeHandle }

// csiStaged is a node-wide CSI volume: its record in StateDir/csi/.
type csiStaged struct {
	Key          string `json:"key"`
	Driver       string `json:"driver"`
	VolumeHandle string `json:"volumeHandle"`
	StagingPath  string `json:"stagingPath"`
	NodeID       string `json:"nodeID,omitempty"`
	// AttachTried / StageTried: ControllerPublishVolume / NodeStageVolume
	// was called (maybe done, maybe not): release undoes it.
	AttachTried    bool                `json:"attachTried,omitempty"`
	Attached       bool                `json:"attached,omitempty"` // ControllerPublishVolume answered
	StageTried     bool                `json:"stageTried,omitempty"`
	StageDone      bool                `json:"stageDone,omitempty"`
	Ready          bool                `json:"ready,omitempty"` // attach and stage (as the driver needs) done
	PublishContext map[string]string   `json:"publishContext,omitempty"`
	SecretRef      *v1.SecretReference `json:"secretRef,omitempty"` // controller publish, for unpublish
}

// csiVolData is the kubelet's vol_data.json beside a pod's CSI mount.
type csiVolData struct {
	DriverName          string `json:"driverName"`
	VolumeHandle        string `json:"volumeHandle"`
	SpecVolID           string `json:"specVolID"`
	NodeName            string `json:"nodeName,omitempty"`
	VolumeLifecycleMode string `json:"volumeLifecycleMode"`
	StagingPath         string `json:"stagingPath,omitempty"`
}

// csiState is the Manager's CSI part.
type csiState struct {
	staged map[string]*csiStaged // by key
}

// initCSI loads the node-wide CSI records and follows driver
// registrations: a driver that (re)registers clears the back-off of its
// volumes and wakes the reconciler, so a pod waiting for it mounts now.
func (m *Manager) initCSI() error {
	m.csi = &csiState{staged: map[string]*csiStaged{}}
	recs, err := loadJSONDir[csiStaged](filepath.Join(m.opts.StateDir, "csi"))
	if err != nil {
		return err
	}
	for i := range recs {
		r := recs[i]
		m.csi.staged[r.Key] = &r
	}
	m.metrics.csiDrivers = m.opts.CSIDrivers
	if m.opts.CSIDrivers != nil {
		// In a goroutine: the manager's lock may be held through a long
		// NodeStageVolume (mkfs), which must not stall the watcher.
		m.opts.CSIDrivers.Subscribe(func(name string, registered bool) { go m.csiDriverChanged(name, registered) })
	}
	return nil
}

func (m *Manager) csiDriverChanged(name string, registered bool) {
	if !registered {
		return
	}
	m.mu.Lock()
	for k := range m.backoffs {
		if strings.Contains(k, "csi:"+name+":") || strings.HasPrefix(k, "teardown/") {
			delete(m.backoffs, k)
		}
	}
	for uid, pe := range m.pods {
		for _, vs := range pe.volumes {
			if vs.Kind == kindCSI && vs.CSI.Driver == name {
				delete(m.backoffs, "setup/"+string(uid)+"/"+vs.Name)
			}
		}
	}
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *Manager) csiDriver(name string) (*csiplugin.Driver, error) {
	if m.opts.CSIDrivers == nil {
		return nil, fmt.Errorf("CSI driver %s not registered: the agent watches no plugins registry dir", name)
	}
	return m.opts.CSIDrivers.Get(name)
}

func (m *Manager) csiStagingPath(driver, handle string) string {
	sum := sha256.Sum256([]byte(handle))
	return filepath.Join(m.opts.GlobalMountDir, "kubernetes.io", "csi", driver, hex.EncodeToString(sum[:]), "globalmount")
}

func (m *Manager) csiRecordPath(key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(m.opts.StateDir, "csi", hex.EncodeToString(sum[:16])+".json")
}

func (m *Manager) saveCSI(sv *csiStaged) error { return writeJSONAtomic(m.csiRecordPath(sv.Key), sv) }

// setCSIPersistent resolves a claim bound to a PV with spec.csi.
func (m *Manager) setCSIPersistent(pod *v1.Pod, vs *volumeSpec, pv *v1.PersistentVolume) error {
	c := pv.Spec.CSI
	if !csiDriverName.MatchString(c.Driver) {
		return fmt.Errorf("persistentvolume %s: csi.driver %q: not a CSI driver name", pv.Name, c.Driver)
	}
	if c.VolumeHandle == "" {
		return fmt.Errorf("persistentvolume %s: csi.volumeHandle is required", pv.Name)
	}
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return fmt.Errorf("persistentvolume %s: raw block CSI volumes are not supported", pv.Name)
	}
	ref := func(r *v1.SecretReference) *v1.SecretReference {
		if r == nil {
			return nil
		}
		r = r.DeepCopy()
		if r.Namespace == "" {
			r.Namespace = pod.Namespace
		}
		return r
	}
	vs.Kind, vs.Plugin, vs.DirName = kindCSI, csiPluginPrefix+c.Driver, csiDirName
	vs.CSI = &csiVolume{
		Driver: c.Driver, VolumeHandle: c.VolumeHandle, FSType: c.FSType, AttachReadOnly: c.ReadOnly,
		Attributes:          c.VolumeAttributes,
		ControllerSecretRef: ref(c.ControllerPublishSecretRef),
		StageSecretRef:      ref(c.NodeStageSecretRef),
		PublishSecretRef:    ref(c.NodePublishSecretRef),
		ExpandSecretRef:     ref(c.NodeExpandSecretRef),
		AccessModes:         pv.Spec.AccessModes,
		MountOptions:        pv.Spec.MountOptions,
	}
	vs.ReadOnly = vs.ReadOnly || c.ReadOnly
	vs.GlobalPath = m.csiStagingPath(c.Driver, c.VolumeHandle)
	return nil
}

// setCSIInline resolves an inline ephemeral CSI volume; its handle is the
// kubelet's (csi-<sha256(pod uid + volume name)>).
func setCSIInline(pod *v1.Pod, vs *volumeSpec, src *v1.CSIVolumeSource) error {
	if !csiDriverName.MatchString(src.Driver) {
		return fmt.Errorf("csi.driver %q: not a CSI driver name", src.Driver)
	}
	sum := sha256.Sum256([]byte(string(pod.UID) + vs.Name))
	vs.Kind, vs.Plugin, vs.DirName = kindCSI, csiPluginPrefix+src.Driver, csiDirName
	vs.CSI = &csiVolume{Driver: src.Driver, VolumeHandle: "csi-" + hex.EncodeToString(sum[:]), Attributes: src.VolumeAttributes, Ephemeral: true}
	if src.FSType != nil {
		vs.CSI.FSType = *src.FSType
	}
	if src.NodePublishSecretRef != nil {
		vs.CSI.PublishSecretRef = &v1.SecretReference{Name: src.NodePublishSecretRef.Name, Namespace: pod.Namespace}
	}
	vs.ReadOnly = src.ReadOnly != nil && *src.ReadOnly
	return nil
}

func (m *Manager) csiTarget(uid types.UID, vs *volumeSpec) string {
	return filepath.Join(m.volumeDir(uid, vs), "mount")
}

// setupCSIVolume walks a CSI pod volume up: attach and stage (node-wide,
// once), then publish for the pod. Each step is its own operation with
// its own back-off.
func (m *Manager) setupCSIVolume(ctx context.Context, pe *podEntry, vs *volumeSpec, st *volState) error {
	if st.ready {
		return m.csiRepublish(ctx, pe, vs, st)
	}
	target := m.csiTarget(pe.pod.UID, vs)
	if ok, _ := isMountPoint(target); ok {
		// Published before a restart: adopt it as it is.
		if !vs.CSI.Ephemeral && m.csi.staged[vs.CSI.key()] == nil {
			sv := m.newCSIStaged(vs, "")
			// In node mode the attach is the controller's to undo.
			sv.AttachTried = m.opts.ControllerAttach == nil
			sv.Attached, sv.StageTried, sv.Ready = true, true, true
			sv.StageDone, _ = isMountPoint(sv.StagingPath)
			if err := m.saveCSI(sv); err != nil {
				return err
			}
			m.csi.staged[sv.Key] = sv
		}
		st.ready, st.hostPath = true, target
		m.metrics.op("setup", vs.Plugin, errAdopted)
		return nil
	}
	var sv *csiStaged
	if !vs.CSI.Ephemeral {
		var err error
		if sv, err = m.csiStage(ctx, vs); err != nil {
			return err
		}
	}
	key := "setup/" + string(pe.pod.UID) + "/" + vs.Name
	return m.do(key, "setup", vs.Plugin, func() error {
		if err := m.csiPublish(ctx, pe, vs, sv, target); err != nil {
			return err
		}
		st.ready, st.hostPath, st.published = true, target, time.Now()
		return nil
	})
}

// csiRepublishPeriod: how often a driver whose CSIDriver says
// requiresRepublish gets NodePublishVolume again for a mounted volume (the
// kubelet does it at each pod sync, about once a minute), so it can hand
// the pod fresh service account tokens or rotated content.
var csiRepublishPeriod = time.Minute

// csiRepublish publishes a ready volume again when its driver asks for it
// and its period is up (a volume adopted after a restart at once). A
// failure leaves the volume as it is, mounted, and is retried with
// back-off.
func (m *Manager) csiRepublish(ctx context.Context, pe *podEntry, vs *volumeSpec, st *volState) error {
	if time.Since(st.published) < csiRepublishPeriod {
		return nil
	}
	policy, err := m.csiPolicy(vs.CSI)
	if err != nil || !policy.republish {
		// Asked again after a period, not at every pass.
		st.published = time.Now()
		return nil
	}
	var sv *csiStaged
	if !vs.CSI.Ephemeral {
		sv = m.csi.staged[vs.CSI.key()]
	}
	key := "republish/" + string(pe.pod.UID) + "/" + vs.Name
	return m.do(key, "republish", vs.Plugin, func() error {
		if err := m.csiPublish(ctx, pe, vs, sv, m.csiTarget(pe.pod.UID, vs)); err != nil {
			return fmt.Errorf("republish: %w", err)
		}
		st.published = time.Now()
		return nil
	})
}

func (m *Manager) newCSIStaged(vs *volumeSpec, nodeID string) *csiStaged {
	return &csiStaged{Key: vs.CSI.key(), Driver: vs.CSI.Driver, VolumeHandle: vs.CSI.VolumeHandle,
		StagingPath: vs.GlobalPath, NodeID: nodeID, SecretRef: vs.CSI.ControllerSecretRef}
}

// csiStage makes the node-wide volume ready: ControllerPublishVolume when
// the driver's node endpoint serves it, NodeStageVolume when the driver
// stages. A driver that is not registered fails the first step, with
// back-off.
func (m *Manager) csiStage(ctx context.Context, vs *volumeSpec) (*csiStaged, error) {
	k := vs.CSI.key()
	sv := m.csi.staged[k]
	if sv != nil && sv.Ready {
		if !sv.StageDone {
			return sv, nil
		}
		if ok, _ := isMountPoint(sv.StagingPath); ok {
			return sv, nil
		}
		// The staging mount is gone (a reboot, someone unmounted it):
		// attach and stage again; both are idempotent.
		klog.InfoS("CSI staging mount gone; attaching and staging again", "volume", k, "path", sv.StagingPath)
		sv.Ready, sv.StageDone, sv.Attached = false, false, false
	}
	d, derr := m.csiDriver(vs.CSI.Driver)
	if derr == nil && sv == nil {
		sv = m.newCSIStaged(vs, d.NodeID)
		m.csi.staged[k] = sv
	}
	// Node mode: the attach is the controller's; wait for it (attach.go).
	viaAPI, aerr := m.controllerAttached(vs.CSI.Driver)
	if derr == nil && aerr == nil && viaAPI && !sv.Attached {
		if err := m.do("inuse/"+k, "", vs.Plugin, func() error { return m.csiCheckInUse(vs) }); err != nil {
			return nil, fmt.Errorf("attach: %w", err)
		}
	}
	static := m.opts.ControllerAttach == nil
	if derr != nil || aerr != nil || (!sv.Attached && (viaAPI || static && d.ControllerPublish)) {
		err := m.do("attach/"+k, "attach", vs.Plugin, func() error {
			switch {
			case derr != nil:
				return derr
			case aerr != nil:
				return aerr
			case viaAPI:
				return m.csiWaitForAttach(ctx, vs, sv)
			}
			return m.csiAttach(ctx, d, vs, sv)
		})
		if err != nil && derr != nil {
			return nil, err // "CSI driver X not registered", whatever step comes first
		}
		if err != nil {
			return nil, fmt.Errorf("attach: %w", err)
		}
	}
	if d.StageUnstage {
		err := m.do("mountdevice/"+k, "mount_device", vs.Plugin, func() error { return m.csiNodeStage(ctx, d, vs, sv) })
		if err != nil {
			return nil, fmt.Errorf("mount device: %w", err)
		}
	}
	sv.Ready = true
	return sv, m.saveCSI(sv)
}

func (m *Manager) csiAttach(ctx context.Context, d *csiplugin.Driver, vs *volumeSpec, sv *csiStaged) error {
	secrets, err := m.csiSecrets(vs.CSI.ControllerSecretRef)
	if err != nil {
		return err
	}
	sv.AttachTried, sv.NodeID = true, d.NodeID
	if err := m.saveCSI(sv); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, csiCallTimeout)
	defer cancel()
	resp, err := d.Controller.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
		VolumeId: vs.CSI.VolumeHandle, NodeId: d.NodeID, VolumeCapability: csiCapability(d, vs.CSI),
		Readonly: vs.CSI.AttachReadOnly, Secrets: secrets, VolumeContext: vs.CSI.Attributes,
	})
	if err != nil {
		return fmt.Errorf("ControllerPublishVolume %s on node %s: %w", vs.CSI.VolumeHandle, d.NodeID, err)
	}
	sv.PublishContext, sv.Attached = resp.GetPublishContext(), true
	return m.saveCSI(sv)
}

func (m *Manager) csiNodeStage(ctx context.Context, d *csiplugin.Driver, vs *volumeSpec, sv *csiStaged) error {
	secrets, err := m.csiSecrets(vs.CSI.StageSecretRef)
	if err != nil {
		return err
	}
	// The CO makes the staging dir (the kubelet: MountDevice).
	if err := os.MkdirAll(sv.StagingPath, 0o750); err != nil {
		return err
	}
	sv.StageTried = true
	if err := m.saveCSI(sv); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, csiCallTimeout)
	defer cancel()
	_, err = d.Node.NodeStageVolume(cctx, &csi.NodeStageVolumeRequest{
		VolumeId: vs.CSI.VolumeHandle, PublishContext: sv.PublishContext, StagingTargetPath: sv.StagingPath,
		VolumeCapability: csiCapability(d, vs.CSI), Secrets: secrets, VolumeContext: vs.CSI.Attributes,
	})
	if err != nil {
		if ok, _ := isMountPoint(sv.StagingPath); !ok {
			os.Remove(sv.StagingPath)
			os.Remove(filepath.Dir(sv.StagingPath))
		}
		if status.Code(err) == codes.FailedPrecondition {
			sv.Attached = false // the attach may be gone: made again on the retry
		}
		if status.Code(err) == codes.FailedPrecondition && !d.ControllerPublish && m.opts.ControllerAttach == nil {
			return fmt.Errorf("NodeStageVolume %s: %w (the volume may need ControllerPublishVolume, an attach: without an API server no attacher runs, and driver %s serves no controller service on its node endpoint for the agent to call)", vs.CSI.VolumeHandle, err, d.Name)
		}
		return fmt.Errorf("NodeStageVolume %s: %w", vs.CSI.VolumeHandle, err)
	}
	sv.StageDone = true
	return m.saveCSI(sv)
}

// csiPublish: vol_data.json, then NodePublishVolume at target; whatever
// it made it removes again on failure.
func (m *Manager) csiPublish(ctx context.Context, pe *podEntry, vs *volumeSpec, sv *csiStaged, target string) error {
	d, err := m.csiDriver(vs.CSI.Driver)
	if err != nil {
		return err
	}
	secrets, err := m.csiSecrets(vs.CSI.PublishSecretRef)
	if err != nil {
		return err
	}
	dir := filepath.Dir(target)
	created := false
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		created = true
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	policy, err := m.csiPolicy(vs.CSI)
	if err != nil {
		return err
	}
	data := csiVolData{DriverName: vs.CSI.Driver, VolumeHandle: vs.CSI.VolumeHandle, SpecVolID: vs.SpecName, NodeName: d.NodeID, VolumeLifecycleMode: csiModePersist}
	req := &csi.NodePublishVolumeRequest{
		VolumeId: vs.CSI.VolumeHandle, TargetPath: target, VolumeCapability: csiCapability(d, vs.CSI),
		Readonly: vs.ReadOnly, Secrets: secrets, VolumeContext: vs.CSI.Attributes,
	}
	if sv != nil {
		req.PublishContext = sv.PublishContext
		if sv.StageDone {
			req.StagingTargetPath, data.StagingPath = sv.StagingPath, sv.StagingPath
		}
	}
	if vs.CSI.Ephemeral {
		data.VolumeLifecycleMode = csiModeEphemeral
	}
	if len(policy.tokens) > 0 {
		tokens, err := m.csiTokens(ctx, pe.pod, policy.tokens)
		if err != nil {
			return err
		}
		if policy.tokensInSecrets {
			req.Secrets = maps.Clone(req.Secrets)
			if req.Secrets == nil {
				req.Secrets = map[string]string{}
			}
			req.Secrets[csiTokensKey] = tokens
		} else {
			req.VolumeContext = maps.Clone(req.VolumeContext)
			if req.VolumeContext == nil {
				req.VolumeContext = map[string]string{}
			}
			req.VolumeContext[csiTokensKey] = tokens
		}
	}
	if policy.podInfo {
		// The kubelet's getPodInfoAttrs, over the volume's attributes.
		vc := maps.Clone(req.VolumeContext)
		if vc == nil {
			vc = map[string]string{}
		}
		vc[csiEphemeralKey] = strconv.FormatBool(vs.CSI.Ephemeral)
		vc[csiPodNameKey], vc[csiPodNSKey], vc[csiPodUIDKey] = pe.pod.Name, pe.pod.Namespace, string(pe.pod.UID)
		vc[csiSAKey] = pe.pod.Spec.ServiceAccountName
		req.VolumeContext = vc
	}
	undo := func() {
		if ok, _ := isMountPoint(target); ok {
			return
		}
		os.Remove(target)
		if created {
			removeDirSafely(dir)
		}
	}
	if err := writeJSONAtomic(filepath.Join(dir, csiVolDataFile), data); err != nil {
		undo()
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, csiCallTimeout)
	defer cancel()
	if _, err := d.Node.NodePublishVolume(cctx, req); err != nil {
		undo()
		return fmt.Errorf("NodePublishVolume %s: %w", vs.CSI.VolumeHandle, err)
	}
	if own := csiOwnership(pe.pod, vs, policy.fsGroup); own != nil {
		if err := own.change(target); err != nil { // ignored by the kubelet too
			klog.ErrorS(err, "fsGroup on CSI volume", "path", target)
		}
	}
	return nil
}

// csiPolicy is what a CSIDriver object says about how the node uses the
// driver's volumes.
type csiPolicy struct {
	podInfo bool // podInfoOnMount: the pod's identity in the volume context
	fsGroup storagev1.FSGroupPolicy
	// tokens: service account tokens of the pod, one per audience, in the
	// volume context (or the publish secrets with tokensInSecrets).
	tokens          []storagev1.TokenRequest
	tokensInSecrets bool
	// republish: NodePublishVolume again every csiRepublishPeriod while
	// the pod runs (fresh tokens, rotated content).
	republish bool
}

// csiPolicy reads the driver's CSIDriver object in node mode (the
// kubelet's defaults without one). Static mode has no such objects: the
// default fsGroupPolicy, and the pod's identity for inline volumes only,
// whose drivers (secrets stores and the like) are written to need it.
func (m *Manager) csiPolicy(c *csiVolume) (csiPolicy, error) {
	p := csiPolicy{fsGroup: storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy}
	if m.opts.ControllerAttach == nil {
		p.podInfo = c.Ephemeral
		return p, nil
	}
	spec, err := m.opts.ControllerAttach.CSIDriver(c.Driver)
	if err != nil {
		return p, fmt.Errorf("CSIDriver %s: %w", c.Driver, err)
	}
	if spec != nil {
		p.podInfo = spec.PodInfoOnMount != nil && *spec.PodInfoOnMount
		if spec.FSGroupPolicy != nil {
			p.fsGroup = *spec.FSGroupPolicy
		}
		p.tokens = spec.TokenRequests
		p.tokensInSecrets = spec.ServiceAccountTokenInSecrets != nil && *spec.ServiceAccountTokenInSecrets
		p.republish = spec.RequiresRepublish != nil && *spec.RequiresRepublish
	}
	return p, nil
}

// csiTokens is the kubelet's podServiceAccountTokenAttrs: a token of the
// pod's service account, bound to the pod, per audience the CSIDriver
// asks for, as JSON {audience: {token, expirationTimestamp}}.
func (m *Manager) csiTokens(ctx context.Context, pod *v1.Pod, reqs []storagev1.TokenRequest) (string, error) {
	if m.opts.Tokens == nil {
		return "", errors.New("the CSIDriver asks for service account tokens and there is no API server to issue them")
	}
	type status struct {
		Token               string    `json:"token"`
		ExpirationTimestamp time.Time `json:"expirationTimestamp"`
	}
	out := map[string]status{}
	for _, r := range reqs {
		var exp int64
		if r.ExpirationSeconds != nil {
			exp = *r.ExpirationSeconds
		}
		tok, expires, err := m.opts.Tokens.Token(ctx, pod, r.Audience, exp)
		if err != nil {
			return "", fmt.Errorf("service account token for audience %q: %w", r.Audience, err)
		}
		out[r.Audience] = status{Token: tok, ExpirationTimestamp: expires.UTC().Truncate(time.Second)}
	}
	b, err := json.Marshal(out)
	return string(b), err
}

// csiOwnership is the kubelet's supportsFSGroup: the pod's fsGroup on a
// writable volume, never with fsGroupPolicy None, always with File, and
// with the default ReadWriteOnceWithFSType when the volume has an fsType
// and is a ReadWriteOnce(Pod) PV or an inline volume (mounted RWO).
func csiOwnership(pod *v1.Pod, vs *volumeSpec, policy storagev1.FSGroupPolicy) *volumeOwnership {
	g := podFSGroup(pod)
	if g == nil || vs.ReadOnly || policy == storagev1.NoneFSGroupPolicy {
		return nil
	}
	if policy != storagev1.FileFSGroupPolicy {
		if vs.CSI.FSType == "" {
			return nil
		}
		if !vs.CSI.Ephemeral && !slices.ContainsFunc(vs.CSI.AccessModes, func(m v1.PersistentVolumeAccessMode) bool {
			return m == v1.ReadWriteOnce || m == v1.ReadWriteOncePod
		}) {
			return nil
		}
	}
	o := &volumeOwnership{fsGroup: *g}
	if p := pod.Spec.SecurityContext.FSGroupChangePolicy; p != nil && *p == v1.FSGroupChangeOnRootMismatch {
		o.onRootMismatch = true
	}
	return o
}

// csiCapability: a mount volume with the PV's fsType and mount options;
// the access mode from the PV's first one, as the kubelet picks it
// (asCSIAccessModeV1).
func csiCapability(d *csiplugin.Driver, c *csiVolume) *csi.VolumeCapability {
	am := v1.ReadWriteOnce
	if len(c.AccessModes) > 0 {
		am = c.AccessModes[0]
	}
	var mode csi.VolumeCapability_AccessMode_Mode
	switch am {
	case v1.ReadOnlyMany:
		mode = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
	case v1.ReadWriteMany:
		mode = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	case v1.ReadWriteOncePod:
		mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
		if d.SingleNodeMultiWriter {
			mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
		}
	default:
		mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
		if d.SingleNodeMultiWriter {
			mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER
		}
	}
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: c.FSType, MountFlags: c.MountOptions}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func (m *Manager) csiSecrets(ref *v1.SecretReference) (map[string]string, error) {
	if ref == nil {
		return nil, nil
	}
	s := m.objs.Secret(ref.Namespace, ref.Name)
	if s == nil {
		return nil, fmt.Errorf("CSI secret %s/%s not found", ref.Namespace, ref.Name)
	}
	out := map[string]string{}
	for k, v := range secretData(s) {
		out[k] = string(v)
	}
	return out, nil
}

// releaseCSI unstages and detaches the node-wide CSI volumes no pod
// (desired or terminating) uses any more.
func (m *Manager) releaseCSI(ctx context.Context) {
	used := map[string]bool{}
	for _, pe := range m.pods {
		for _, vs := range pe.volumes {
			if vs.Kind == kindCSI && !vs.CSI.Ephemeral {
				used[vs.CSI.key()] = true
			}
		}
	}
	for k, sv := range m.csi.staged {
		if used[k] {
			continue
		}
		if err := m.csiRelease(ctx, sv); err == nil {
			delete(m.csi.staged, k)
		}
	}
}

func (m *Manager) csiRelease(ctx context.Context, sv *csiStaged) error {
	plugin := csiPluginPrefix + sv.Driver
	d, derr := m.csiDriver(sv.Driver)
	mounted, _ := isMountPoint(sv.StagingPath)
	if sv.StageTried || mounted {
		err := m.do("unmountdevice/"+sv.Key, "unmount_device", plugin, func() error {
			if derr != nil {
				return derr
			}
			if d.StageUnstage {
				cctx, cancel := context.WithTimeout(ctx, csiCallTimeout)
				defer cancel()
				if _, err := d.Node.NodeUnstageVolume(cctx, &csi.NodeUnstageVolumeRequest{VolumeId: sv.VolumeHandle, StagingTargetPath: sv.StagingPath}); err != nil {
					return fmt.Errorf("NodeUnstageVolume %s: %w", sv.VolumeHandle, err)
				}
			}
			if ok, _ := isMountPoint(sv.StagingPath); ok {
				return fmt.Errorf("%s is still mounted after NodeUnstageVolume", sv.StagingPath)
			}
			sv.StageTried, sv.StageDone, sv.Ready = false, false, false
			return m.saveCSI(sv)
		})
		if err != nil {
			return err
		}
	}
	os.Remove(sv.StagingPath)
	os.Remove(filepath.Dir(sv.StagingPath))
	if sv.AttachTried {
		err := m.do("detach/"+sv.Key, "detach", plugin, func() error {
			if derr != nil {
				return derr
			}
			// In node mode the controller detaches a volume that needs an
			// attach, once it leaves status.volumesInUse, even one this
			// agent attached before it joined a cluster.
			viaAPI, err := m.controllerAttached(sv.Driver)
			if err != nil {
				return err
			}
			if d.ControllerPublish && !viaAPI {
				secrets, err := m.csiSecrets(sv.SecretRef)
				if err != nil {
					return err
				}
				node := sv.NodeID
				if node == "" {
					node = d.NodeID
				}
				cctx, cancel := context.WithTimeout(ctx, csiCallTimeout)
				defer cancel()
				if _, err := d.Controller.ControllerUnpublishVolume(cctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: sv.VolumeHandle, NodeId: node, Secrets: secrets}); err != nil {
					return fmt.Errorf("ControllerUnpublishVolume %s from node %s: %w", sv.VolumeHandle, node, err)
				}
			}
			sv.AttachTried, sv.Attached, sv.Ready = false, false, false
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := os.Remove(m.csiRecordPath(sv.Key)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// teardownCSIDir unpublishes one pod CSI volume dir, found on disk: its
// vol_data.json names driver and handle. Unmounting needs the driver, as
// in the kubelet; a dir with nothing mounted is simply removed.
func (m *Manager) teardownCSIDir(ctx context.Context, dir string) error {
	target := filepath.Join(dir, "mount")
	mounted, err := isMountPoint(target)
	if err != nil {
		return err
	}
	var data csiVolData
	b, rerr := os.ReadFile(filepath.Join(dir, csiVolDataFile))
	if rerr == nil {
		rerr = json.Unmarshal(b, &data)
	}
	switch {
	case rerr == nil:
		d, err := m.csiDriver(data.DriverName)
		if err != nil {
			if mounted {
				return fmt.Errorf("NodeUnpublishVolume %s: %w", data.VolumeHandle, err)
			}
			break
		}
		cctx, cancel := context.WithTimeout(ctx, csiCallTimeout)
		defer cancel()
		if _, err := d.Node.NodeUnpublishVolume(cctx, &csi.NodeUnpublishVolumeRequest{VolumeId: data.VolumeHandle, TargetPath: target}); err != nil {
			return fmt.Errorf("NodeUnpublishVolume %s: %w", data.VolumeHandle, err)
		}
	case mounted:
		klog.InfoS("CSI volume without vol_data.json; unmounting directly", "dir", dir, "err", rerr)
		if err := unmountAll(target); err != nil {
			return err
		}
	}
	if ok, _ := isMountPoint(target); ok {
		return fmt.Errorf("%s is still mounted after NodeUnpublishVolume", target)
	}
	if err := os.Remove(target); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := os.Remove(filepath.Join(dir, csiVolDataFile)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return removeDirSafely(dir)
}

// csiStatsSource names a CSI volume for kubelet_volume_stats_*.
type csiStatsSource struct {
	driver, handle, staging string
}

func csiStatsFor(vs *volumeSpec) *csiStatsSource {
	if vs.Kind != kindCSI {
		return nil
	}
	return &csiStatsSource{driver: vs.CSI.Driver, handle: vs.CSI.VolumeHandle, staging: vs.GlobalPath}
}

// volumeUsage is what kubelet_volume_stats_* report.
type volumeUsage struct {
	capacity, available, used      float64
	inodes, inodesFree, inodesUsed float64
	hasInodes                      bool
}

// csiUsage asks the driver (NodeGetVolumeStats) when it has
// GET_VOLUME_STATS; false sends the collector to statfs.
func csiUsage(drivers *csiplugin.Registry, t statsTarget) (volumeUsage, bool) {
	var u volumeUsage
	if t.csi == nil || drivers == nil {
		return u, false
	}
	d, err := drivers.Get(t.csi.driver)
	if err != nil || !d.VolumeStats {
		return u, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), csiStatsTimeout)
	defer cancel()
	resp, err := d.Node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: t.csi.handle, VolumePath: t.path, StagingTargetPath: t.csi.staging})
	if err != nil {
		klog.V(4).InfoS("NodeGetVolumeStats failed; using statfs", "driver", t.csi.driver, "volume", t.csi.handle, "err", err)
		return u, false
	}
	found := false
	for _, us := range resp.GetUsage() {
		switch us.GetUnit() {
		case csi.VolumeUsage_BYTES:
			u.capacity, u.available, u.used = float64(us.GetTotal()), float64(us.GetAvailable()), float64(us.GetUsed())
			found = true
		case csi.VolumeUsage_INODES:
			u.inodes, u.inodesFree, u.inodesUsed = float64(us.GetTotal()), float64(us.GetAvailable()), float64(us.GetUsed())
			u.hasInodes = true
		}
	}
	return u, found
}
