package volumes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"
)

// volumeSpec is one pod volume after resolution: claims bound to their PV
// and the PV's source copied in, so the record in StateDir is enough to tear
// it down or adopt it after a restart without the API objects.
type volumeSpec struct {
	Name     string `json:"name"`     // the pod's volume name
	Kind     string `json:"kind"`     // see kind* below
	Plugin   string `json:"plugin"`   // metric label, e.g. kubernetes.io/empty-dir, flexvolume-peapod/loop
	DirName  string `json:"dirName"`  // <PodsDir>/<uid>/volumes/<DirName>/<SpecName>; "" for hostPath
	SpecName string `json:"specName"` // the volume name, or the PV name for a claim
	ReadOnly bool   `json:"readOnly,omitempty"`

	Source   v1.VolumeSource                `json:"source"` // emptyDir and the projected kinds
	HostPath *v1.HostPathVolumeSource       `json:"hostPath,omitempty"`
	Flex     *v1.FlexPersistentVolumeSource `json:"flex,omitempty"`
	Local    *v1.LocalVolumeSource          `json:"local,omitempty"`
	CSI      *csiVolume                     `json:"csi,omitempty"` // csi.go

	Claim  string `json:"claim,omitempty"`  // "ns/name" of the PVC
	PVName string `json:"pvName,omitempty"` // the bound PV

	// Device is the key of the node-wide device this volume mounts from
	// (an attachable flex volume, a local block device); "" for none.
	Device     string `json:"device,omitempty"`
	GlobalPath string `json:"globalPath,omitempty"`
}

const (
	kindEmptyDir    = "emptyDir"
	kindHostPath    = "hostPath"
	kindConfigMap   = "configMap"
	kindSecret      = "secret"
	kindDownwardAPI = "downwardAPI"
	kindProjected   = "projected"
	kindFlex        = "flexVolume"
	kindLocal       = "local"
)

func (vs *volumeSpec) projection() bool {
	switch vs.Kind {
	case kindConfigMap, kindSecret, kindDownwardAPI, kindProjected:
		return true
	}
	return false
}

// hasToken: a projected volume with a serviceAccountToken source, which
// must be written again before its token expires.
func (vs *volumeSpec) hasToken() bool {
	if vs.Kind != kindProjected || vs.Source.Projected == nil {
		return false
	}
	for _, s := range vs.Source.Projected.Sources {
		if s.ServiceAccountToken != nil {
			return true
		}
	}
	return false
}

// onTmpfs: the kubelet wraps secret, downwardAPI and projected volumes
// in a memory emptyDir (their wrappedVolumeSpec) so secrets never touch the
// disk; configMap in a disk one.
func (vs *volumeSpec) onTmpfs() bool {
	switch vs.Kind {
	case kindSecret, kindDownwardAPI, kindProjected:
		return true
	case kindEmptyDir:
		return vs.Source.EmptyDir != nil && vs.Source.EmptyDir.Medium == v1.StorageMediumMemory
	}
	return false
}

// resolveVolumes turns a pod's volumes into volumeSpecs: it binds claims,
// asks flex drivers for their capabilities and validates what it can before
// anything touches the node.
func (m *Manager) resolveVolumes(ctx context.Context, pod *v1.Pod, objs *Objects) ([]*volumeSpec, error) {
	var out []*volumeSpec
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		vs := &volumeSpec{Name: v.Name, SpecName: v.Name}
		src := v.VolumeSource
		switch {
		case src.EmptyDir != nil:
			vs.Kind, vs.Plugin, vs.DirName = kindEmptyDir, "kubernetes.io/empty-dir", "kubernetes.io~empty-dir"
			vs.Source.EmptyDir = src.EmptyDir.DeepCopy()
		case src.HostPath != nil:
			vs.Kind, vs.Plugin = kindHostPath, "kubernetes.io/host-path"
			vs.HostPath = src.HostPath.DeepCopy()
		case src.ConfigMap != nil:
			vs.Kind, vs.Plugin, vs.DirName = kindConfigMap, "kubernetes.io/configmap", "kubernetes.io~configmap"
			vs.Source.ConfigMap = src.ConfigMap.DeepCopy()
		case src.Secret != nil:
			vs.Kind, vs.Plugin, vs.DirName = kindSecret, "kubernetes.io/secret", "kubernetes.io~secret"
			vs.Source.Secret = src.Secret.DeepCopy()
		case src.DownwardAPI != nil:
			vs.Kind, vs.Plugin, vs.DirName = kindDownwardAPI, "kubernetes.io/downward-api", "kubernetes.io~downward-api"
			vs.Source.DownwardAPI = src.DownwardAPI.DeepCopy()
		case src.Projected != nil:
			vs.Kind, vs.Plugin, vs.DirName = kindProjected, "kubernetes.io/projected", "kubernetes.io~projected"
			vs.Source.Projected = src.Projected.DeepCopy()
		case src.FlexVolume != nil:
			f := src.FlexVolume
			pf := &v1.FlexPersistentVolumeSource{Driver: f.Driver, FSType: f.FSType, ReadOnly: f.ReadOnly, Options: f.Options}
			if f.SecretRef != nil {
				pf.SecretRef = &v1.SecretReference{Name: f.SecretRef.Name, Namespace: pod.Namespace}
			}
			if err := m.setFlex(ctx, vs, pf, ""); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
		case src.CSI != nil:
			if err := setCSIInline(pod, vs, src.CSI); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
		case src.PersistentVolumeClaim != nil:
			if err := m.resolveClaim(ctx, pod, vs, src.PersistentVolumeClaim, objs); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
		default:
			return nil, fmt.Errorf("volume %q: unsupported volume source", v.Name)
		}
		out = append(out, vs)
	}
	return out, nil
}

func (m *Manager) resolveClaim(ctx context.Context, pod *v1.Pod, vs *volumeSpec, src *v1.PersistentVolumeClaimVolumeSource, objs *Objects) error {
	key := pod.Namespace + "/" + src.ClaimName
	pvc := objs.PersistentVolumeClaim(pod.Namespace, src.ClaimName)
	if pvc == nil {
		return fmt.Errorf("persistentvolumeclaim %s not found", key)
	}
	pv, err := bindClaim(pvc, objs.PersistentVolumes, m.boundTo)
	if err != nil {
		return err
	}
	m.boundTo[pv.Name] = key
	vs.Claim, vs.PVName, vs.SpecName = key, pv.Name, pv.Name
	vs.ReadOnly = src.ReadOnly
	ps := pv.Spec.PersistentVolumeSource
	switch {
	case ps.FlexVolume != nil:
		f := ps.FlexVolume.DeepCopy()
		if f.SecretRef != nil && f.SecretRef.Namespace == "" {
			// A PV's secret without a namespace is in the claim's, as the
			// kubelet's flex plugin reads it.
			f.SecretRef.Namespace = pod.Namespace
		}
		return m.setFlex(ctx, vs, f, pv.Name)
	case ps.CSI != nil:
		return m.setCSIPersistent(pod, vs, pv)
	case ps.HostPath != nil:
		vs.Kind, vs.Plugin = kindHostPath, "kubernetes.io/host-path"
		vs.HostPath = ps.HostPath.DeepCopy()
	case ps.Local != nil:
		vs.Kind, vs.Plugin, vs.DirName = kindLocal, "kubernetes.io/local-volume", "kubernetes.io~local-volume"
		vs.Local = ps.Local.DeepCopy()
		if isBlockDevice(ps.Local.Path) {
			vs.Device = "local:" + pv.Name
			vs.GlobalPath = filepath.Join(m.opts.GlobalMountDir, "kubernetes.io~local-volume", pv.Name)
		}
	default:
		return fmt.Errorf("persistentvolume %s: unsupported source (csi, flexVolume, local and hostPath are)", pv.Name)
	}
	return nil
}

func (m *Manager) setFlex(ctx context.Context, vs *volumeSpec, f *v1.FlexPersistentVolumeSource, pvName string) error {
	if f.Driver == "" {
		return fmt.Errorf("flexVolume: driver is required")
	}
	_, caps, err := m.flex.get(ctx, f.Driver)
	if err != nil {
		return err
	}
	vs.Kind, vs.Plugin, vs.DirName = kindFlex, flexPluginPrefix+f.Driver, flexDriverDir(f.Driver)
	vs.Flex = f
	vs.ReadOnly = vs.ReadOnly || f.ReadOnly
	if pvName != "" {
		vs.SpecName = pvName
	}
	if caps.Attach {
		name := pvName
		if name == "" {
			// An inline volume: name the device by what it is, so two pods
			// naming the same disk share one attachment.
			b, _ := json.Marshal(f.Options)
			h := sha256.Sum256(append([]byte(f.Driver+"\x00"), b...))
			name = "inline-" + hex.EncodeToString(h[:8])
		}
		vs.Device = "flex:" + f.Driver + ":" + name
		vs.GlobalPath = filepath.Join(m.opts.GlobalMountDir, flexDriverDir(f.Driver), name)
	}
	return nil
}

// deviceVolumeName is the name a flex driver gets for detach: the PV name,
// or the inline device name.
func deviceVolumeName(key string) string {
	return key[strings.LastIndex(key, ":")+1:]
}
