package volumes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"peapod/volumes/csiplugin"
)

const csiLoopDriver = "loop.csi.peapod.io"

// csiObjs: a PV with spec.csi (the static provisioning a manifest does)
// bound to claim ns/data.
func csiObjs(handle string) *Objects {
	cls := "csi-loop"
	return &Objects{
		PersistentVolumes: []*v1.PersistentVolume{{ObjectMeta: metav1.ObjectMeta{Name: "pv-csi"}, Spec: v1.PersistentVolumeSpec{
			StorageClassName: cls, AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Capacity: v1.ResourceList{v1.ResourceStorage: resource.MustParse("64Mi")},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: csiLoopDriver, VolumeHandle: handle, FSType: "ext4"}},
		}}},
		PersistentVolumeClaims: map[string]*v1.PersistentVolumeClaim{"ns/data": {ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "ns"},
			Spec: v1.PersistentVolumeClaimSpec{StorageClassName: &cls, AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
				Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("32Mi")}}}}},
	}
}

func TestResolveCSI(t *testing.T) {
	plugins := filepath.Join(t.TempDir(), "plugins") // the layout under it is the kubelet's
	m, err := New(Options{PodsDir: t.TempDir(), GlobalMountDir: plugins, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ro := true
	pod := podWith("u-1", "p", []v1.Volume{
		{Name: "data", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data", ReadOnly: true}}},
		{Name: "scratch", VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{Driver: "inline.example.com", ReadOnly: &ro,
			VolumeAttributes: map[string]string{"size": "1Gi"}, NodePublishSecretRef: &v1.LocalObjectReference{Name: "s"}}}},
	})
	vols, err := m.resolveVolumes(context.Background(), pod, csiObjs("vol-1"))
	if err != nil {
		t.Fatal(err)
	}
	pv := vols[0]
	sum := sha256.Sum256([]byte("vol-1"))
	if pv.Kind != kindCSI || pv.Plugin != "kubernetes.io/csi:"+csiLoopDriver || pv.DirName != "kubernetes.io~csi" || pv.SpecName != "pv-csi" || !pv.ReadOnly {
		t.Fatalf("PV volume: %+v", pv)
	}
	if want := plugins + "/kubernetes.io/csi/" + csiLoopDriver + "/" + hex.EncodeToString(sum[:]) + "/globalmount"; pv.GlobalPath != want {
		t.Fatalf("staging path %s, want the kubelet's %s", pv.GlobalPath, want)
	}
	if pv.CSI.AttachReadOnly || pv.CSI.Ephemeral || pv.CSI.FSType != "ext4" || pv.Device != "" {
		t.Fatalf("PV csi: %+v", pv.CSI)
	}
	if got := m.csiTarget("u-1", pv); !strings.HasSuffix(got, "/u-1/volumes/kubernetes.io~csi/pv-csi/mount") {
		t.Fatalf("target %s", got)
	}
	in := vols[1]
	isum := sha256.Sum256([]byte("u-1" + "scratch"))
	if in.Kind != kindCSI || !in.CSI.Ephemeral || in.CSI.VolumeHandle != "csi-"+hex.EncodeToString(isum[:]) || !in.ReadOnly || in.GlobalPath != "" ||
		in.CSI.PublishSecretRef == nil || in.CSI.PublishSecretRef.Namespace != "ns" {
		t.Fatalf("inline volume: %+v %+v", in, in.CSI)
	}

	block := v1.PersistentVolumeBlock
	objs := csiObjs("vol-1")
	objs.PersistentVolumes[0].Spec.VolumeMode = &block
	if _, err := m.resolveVolumes(context.Background(), podWith("u-2", "p", pod.Spec.Volumes[:1]), objs); err == nil || !strings.Contains(err.Error(), "raw block") {
		t.Fatalf("block PV: %v", err)
	}
	objs = csiObjs("vol-1")
	objs.PersistentVolumes[0].Spec.CSI.Driver = "../escape"
	if _, err := m.resolveVolumes(context.Background(), podWith("u-3", "p", pod.Spec.Volumes[:1]), objs); err == nil {
		t.Fatal("a driver name with a path in it was accepted")
	}
}

func TestCSICapability(t *testing.T) {
	for _, tc := range []struct {
		modes []v1.PersistentVolumeAccessMode
		multi bool
		want  csi.VolumeCapability_AccessMode_Mode
	}{
		{nil, false, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		{[]v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}, true, csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER},
		{[]v1.PersistentVolumeAccessMode{v1.ReadWriteOncePod}, true, csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER},
		{[]v1.PersistentVolumeAccessMode{v1.ReadWriteOncePod}, false, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		{[]v1.PersistentVolumeAccessMode{v1.ReadOnlyMany, v1.ReadWriteOnce}, true, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY},
		{[]v1.PersistentVolumeAccessMode{v1.ReadWriteMany}, false, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	} {
		c := csiCapability(&csiplugin.Driver{SingleNodeMultiWriter: tc.multi}, &csiVolume{AccessModes: tc.modes, FSType: "ext4", MountOptions: []string{"noatime"}})
		if got := c.GetAccessMode().GetMode(); got != tc.want {
			t.Errorf("%v multi=%t: %s, want %s", tc.modes, tc.multi, got, tc.want)
		}
		if c.GetMount().GetFsType() != "ext4" || len(c.GetMount().GetMountFlags()) != 1 {
			t.Errorf("mount: %v", c.GetMount())
		}
	}
}

// A CSI volume whose driver is not registered fails with that reason (the
// agent's FailedMount event carries it) and backs off; nothing is left on
// the node, and the pod's teardown needs no driver.
func TestCSIDriverNotRegistered(t *testing.T) {
	root := t.TempDir()
	reg := csiplugin.New(filepath.Join(root, "registry")) // never Run: no driver registers
	m, err := New(Options{PodsDir: filepath.Join(root, "pods"), GlobalMountDir: filepath.Join(root, "plugins"), StateDir: filepath.Join(root, "state"), CSIDrivers: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pod := claimPod("u-nr")
	_, err = m.SetupPod(ctx, pod, csiObjs("vol-1"))
	if err == nil || !strings.Contains(err.Error(), "driver "+csiLoopDriver+" not registered") {
		t.Fatalf("SetupPod: %v", err)
	}
	_, err = m.SetupPod(ctx, pod, nil)
	var be *backoffError
	if !errors.As(m.pods["u-nr"].state["data"].err, &be) || !strings.Contains(err.Error(), "retry in") {
		t.Fatalf("second SetupPod is not backing off: %v", err)
	}
	if len(m.csi.staged) != 0 {
		t.Fatalf("a volume whose driver never answered is recorded: %+v", m.csi.staged)
	}
	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}

	// No registry at all says so too.
	m2, err := New(Options{PodsDir: filepath.Join(root, "pods2"), GlobalMountDir: filepath.Join(root, "plugins"), StateDir: filepath.Join(root, "state2")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m2.SetupPod(ctx, claimPod("u-nr2"), csiObjs("vol-1")); err == nil || !strings.Contains(err.Error(), "driver "+csiLoopDriver+" not registered") {
		t.Fatalf("SetupPod without registry: %v", err)
	}
}
