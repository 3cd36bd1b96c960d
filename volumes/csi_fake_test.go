package volumes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"peapod/volumes/csiplugin"
)

// A fake CSI node plugin (no root needed: "publishing" makes the target
// dir, nothing is mounted) shows the requests the manager sends: which
// calls, with which paths and volume context.

const fakeDriver = "fake.csi.example.com"

type fakeCSI struct {
	csi.UnimplementedNodeServer
	csi.UnimplementedControllerServer
	registerapi.UnimplementedRegistrationServer
	sock     string
	stage    bool
	stageErr error
	// controller: it serves ControllerPublishVolume (PUBLISH_UNPUBLISH_VOLUME),
	// answering publish_context {"devicePath": "/dev/fake"}.
	controller bool

	mu     sync.Mutex
	calls  []string
	pubs   []*csi.NodePublishVolumeRequest
	stages []*csi.NodeStageVolumeRequest
}

func (f *fakeCSI) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	if !f.controller {
		return nil, status.Error(codes.Unimplemented, "no controller")
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{Type: &csi.ControllerServiceCapability_Rpc{
		Rpc: &csi.ControllerServiceCapability_RPC{Type: csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME}}}}}, nil
}

func (f *fakeCSI) ControllerPublishVolume(context.Context, *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	f.record("ControllerPublishVolume")
	return &csi.ControllerPublishVolumeResponse{PublishContext: map[string]string{"devicePath": "/dev/fake"}}, nil
}

func (f *fakeCSI) ControllerUnpublishVolume(context.Context, *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	f.record("ControllerUnpublishVolume")
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

func (f *fakeCSI) getCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeCSI) record(c string) {
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
}

func (f *fakeCSI) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	// No endpoint: the registration socket serves CSI too.
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: fakeDriver, SupportedVersions: []string{"v1.9.0"}}, nil
}

func (f *fakeCSI) NotifyRegistrationStatus(context.Context, *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	return &registerapi.RegistrationStatusResponse{}, nil
}

func (f *fakeCSI) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: "fake-node"}, nil
}

func (f *fakeCSI) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	if f.stage {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (f *fakeCSI) NodeStageVolume(_ context.Context, r *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	f.record("NodeStageVolume")
	f.mu.Lock()
	f.stages = append(f.stages, r)
	f.mu.Unlock()
	return &csi.NodeStageVolumeResponse{}, f.stageErr
}

func (f *fakeCSI) NodeUnstageVolume(context.Context, *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	f.record("NodeUnstageVolume")
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (f *fakeCSI) NodePublishVolume(_ context.Context, r *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	f.record("NodePublishVolume")
	f.mu.Lock()
	f.pubs = append(f.pubs, r)
	f.mu.Unlock()
	return &csi.NodePublishVolumeResponse{}, os.MkdirAll(r.GetTargetPath(), 0o750)
}

func (f *fakeCSI) NodeUnpublishVolume(_ context.Context, r *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	f.record("NodeUnpublishVolume " + r.GetVolumeId())
	if err := os.Remove(r.GetTargetPath()); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// fakeManager serves f in a registry dir and returns a Manager using it,
// once the driver is registered.
func fakeManager(t *testing.T, f *fakeCSI) *Manager {
	t.Helper()
	return fakeManagerWith(t, f, nil)
}

// fakeManagerWith is fakeManager with the Options changed by opt.
func fakeManagerWith(t *testing.T, f *fakeCSI, opt func(*Options)) *Manager {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "pcsif")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	lis, err := net.Listen("unix", filepath.Join(sockDir, "fake-reg.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterNodeServer(srv, f)
	csi.RegisterControllerServer(srv, f)
	registerapi.RegisterRegistrationServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	reg := csiplugin.New(sockDir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { reg.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := reg.Get(fakeDriver); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("fake driver never registered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	root := t.TempDir()
	o := Options{PodsDir: filepath.Join(root, "pods"), GlobalMountDir: filepath.Join(root, "plugins"), StateDir: filepath.Join(root, "state"), CSIDrivers: reg}
	if opt != nil {
		opt(&o)
	}
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A driver without STAGE_UNSTAGE_VOLUME and without a controller service:
// a PV is published with no stage and no staging path; an inline volume is
// published with the ephemeral flag and the pod's identity in its volume
// context; teardown unpublishes both and removes the dirs.
func TestCSIPublishWithoutStage(t *testing.T) {
	f := &fakeCSI{}
	m := fakeManager(t, f)
	ctx := context.Background()
	objs := csiObjs("vol-9")
	objs.PersistentVolumes[0].Spec.CSI.Driver = fakeDriver
	objs.PersistentVolumes[0].Spec.CSI.VolumeAttributes = map[string]string{"share": "a"}
	pod := podWith("u-f", "p", []v1.Volume{
		{Name: "data", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data", ReadOnly: true}}},
		{Name: "eph", VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{Driver: fakeDriver, VolumeAttributes: map[string]string{"size": "1"}}}},
	}, v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}, {Name: "eph", MountPath: "/eph"}}})
	pod.Spec.ServiceAccountName = "sa"
	mounts, err := m.SetupPod(ctx, pod, objs)
	if err != nil {
		t.Fatal(err)
	}
	if d := mountFor(t, mounts, "c", "/data"); !d.Readonly || !strings.HasSuffix(d.HostPath, "/u-f/volumes/kubernetes.io~csi/pv-csi/mount") {
		t.Fatalf("/data: %+v", d)
	}
	if d := mountFor(t, mounts, "c", "/eph"); d.Readonly || !strings.HasSuffix(d.HostPath, "/u-f/volumes/kubernetes.io~csi/eph/mount") {
		t.Fatalf("/eph: %+v", d)
	}
	f.mu.Lock()
	calls, pubs := append([]string(nil), f.calls...), f.pubs
	f.mu.Unlock()
	if len(calls) != 2 || calls[0] != "NodePublishVolume" || calls[1] != "NodePublishVolume" {
		t.Fatalf("calls %v, want two publishes and nothing else", calls)
	}
	pv, eph := pubs[0], pubs[1]
	if pv.VolumeId != "vol-9" || pv.StagingTargetPath != "" || !pv.Readonly || pv.VolumeContext["share"] != "a" || pv.VolumeContext[csiEphemeralKey] != "" ||
		pv.VolumeCapability.GetMount().GetFsType() != "ext4" || pv.VolumeCapability.GetAccessMode().GetMode() != csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER {
		t.Fatalf("PV publish: %v", pv)
	}
	vc := eph.VolumeContext
	if !strings.HasPrefix(eph.VolumeId, "csi-") || eph.StagingTargetPath != "" || vc[csiEphemeralKey] != "true" || vc["size"] != "1" ||
		vc[csiPodNameKey] != "p" || vc[csiPodNSKey] != "ns" || vc[csiPodUIDKey] != "u-f" || vc[csiSAKey] != "sa" {
		t.Fatalf("inline publish: %v", eph)
	}
	if len(m.csi.staged) != 1 {
		t.Fatalf("node-wide state %v, want the PV only", m.csi.staged)
	}

	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	calls = append([]string(nil), f.calls...)
	f.mu.Unlock()
	if len(calls) != 4 || !strings.HasPrefix(calls[2], "NodeUnpublishVolume") || !strings.HasPrefix(calls[3], "NodeUnpublishVolume") {
		t.Fatalf("calls after teardown: %v", calls)
	}
	if _, err := os.Stat(filepath.Join(m.opts.PodsDir, "u-f")); !os.IsNotExist(err) {
		t.Fatalf("pod dir left: %v", err)
	}
	if len(m.csi.staged) != 0 {
		t.Fatalf("node-wide state left: %v", m.csi.staged)
	}
}

// A staging driver whose NodeStageVolume wants an attach that nobody made:
// the error says that static pods cannot attach through this driver.
func TestCSIStageNeedsAttach(t *testing.T) {
	f := &fakeCSI{stage: true, stageErr: status.Error(codes.FailedPrecondition, "volume is not attached")}
	m := fakeManager(t, f)
	objs := csiObjs("vol-1")
	objs.PersistentVolumes[0].Spec.CSI.Driver = fakeDriver
	_, err := m.SetupPod(context.Background(), claimPod("u-att"), objs)
	if err == nil || !strings.Contains(err.Error(), "ControllerPublishVolume") || !strings.Contains(err.Error(), "no controller service") {
		t.Fatalf("SetupPod: %v", err)
	}
	t.Logf("FailedMount: %v", err)
	if err := m.TeardownPod(context.Background(), claimPod("u-att")); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	calls := append([]string(nil), f.calls...)
	f.mu.Unlock()
	// A stage that failed may have done part of its work: undone (the
	// spec makes NodeUnstageVolume idempotent).
	if len(calls) != 2 || calls[0] != "NodeStageVolume" || calls[1] != "NodeUnstageVolume" {
		t.Fatalf("calls %v", calls)
	}
	if ents, _ := os.ReadDir(filepath.Join(m.opts.StateDir, "csi")); len(ents) != 0 {
		t.Fatalf("records left: %v", ents)
	}
}

// csiOwnership follows the kubelet's supportsFSGroup for each
// fsGroupPolicy a CSIDriver can name.
func TestCSIOwnership(t *testing.T) {
	g := int64(1234)
	pod := podWithFSGroup(&g, nil)
	rwo, rox := []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}, []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany, v1.ReadWriteOncePod}
	vol := func(fsType string, modes []v1.PersistentVolumeAccessMode, eph, ro bool) *volumeSpec {
		return &volumeSpec{Kind: kindCSI, ReadOnly: ro, CSI: &csiVolume{FSType: fsType, AccessModes: modes, Ephemeral: eph}}
	}
	for _, tc := range []struct {
		name   string
		pod    *v1.Pod
		vs     *volumeSpec
		policy storagev1.FSGroupPolicy
		want   bool
	}{
		{"default: RWO PV with fsType", pod, vol("ext4", rwo, false, false), storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy, true},
		{"default: ReadWriteOncePod among the modes", pod, vol("ext4", rox, false, false), storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy, true},
		{"default: no fsType", pod, vol("", rwo, false, false), storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy, false},
		{"default: PV without access modes", pod, vol("ext4", nil, false, false), storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy, false},
		{"default: inline with fsType", pod, vol("ext4", nil, true, false), storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy, true},
		{"File: always", pod, vol("", []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}, false, false), storagev1.FileFSGroupPolicy, true},
		{"File: but not read-only", pod, vol("", nil, false, true), storagev1.FileFSGroupPolicy, false},
		{"None: never", pod, vol("ext4", rwo, false, false), storagev1.NoneFSGroupPolicy, false},
		{"no fsGroup", podWithFSGroup(nil, nil), vol("ext4", rwo, false, false), storagev1.FileFSGroupPolicy, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := csiOwnership(tc.pod, tc.vs, tc.policy)
			if (got != nil) != tc.want || got != nil && got.fsGroup != g {
				t.Errorf("csiOwnership = %+v, want fsGroup applied %v", got, tc.want)
			}
		})
	}
}

// Node mode: the CSIDriver's podInfoOnMount puts the pod's identity in the
// volume context of a PV's publish ("ephemeral": "false"), and an inline
// volume of a driver without it gets none (static mode gives inline
// volumes the pod's identity, see TestCSIPublishWithoutStage).
func TestCSIPodInfoOnMount(t *testing.T) {
	f := &fakeCSI{}
	yes := true
	fa := &fakeAttach{notRequired: map[string]bool{fakeDriver: true}, inUse: map[v1.UniqueVolumeName]bool{}}
	m := fakeManagerWith(t, f, func(o *Options) { o.ControllerAttach, o.NodeName = fa, "node-a" })
	ctx := context.Background()
	objs := csiObjs("vol-pi")
	objs.PersistentVolumes[0].Spec.CSI.Driver = fakeDriver
	objs.PersistentVolumes[0].Spec.CSI.VolumeAttributes = map[string]string{"share": "a"}
	eph := v1.Volume{Name: "eph", VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{Driver: fakeDriver}}}
	podA := podWith("u-pi1", "p1", []v1.Volume{eph}, v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "eph", MountPath: "/eph"}}})
	if _, err := m.SetupPod(ctx, podA, objs); err != nil {
		t.Fatal(err)
	}
	fa.set(func() {
		no := false
		fa.specs = map[string]*storagev1.CSIDriverSpec{fakeDriver: {AttachRequired: &no, PodInfoOnMount: &yes}}
	})
	podB := csiPVPod("u-pi2")
	podB.Spec.ServiceAccountName = "sa"
	if _, err := m.SetupPod(ctx, podB, objs); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	pubs := f.pubs
	f.mu.Unlock()
	if len(pubs) != 2 {
		t.Fatalf("%d publishes, want 2", len(pubs))
	}
	if vc := pubs[0].VolumeContext; vc[csiPodNameKey] != "" || vc[csiEphemeralKey] != "" {
		t.Errorf("inline volume of a driver without podInfoOnMount: context %v", vc)
	}
	vc := pubs[1].VolumeContext
	if vc["share"] != "a" || vc[csiEphemeralKey] != "false" || vc[csiPodNameKey] != podB.Name || vc[csiPodNSKey] != "ns" ||
		vc[csiPodUIDKey] != "u-pi2" || vc[csiSAKey] != "sa" {
		t.Errorf("PV of a driver with podInfoOnMount: context %v", vc)
	}
	if objs.PersistentVolumes[0].Spec.CSI.VolumeAttributes[csiPodNameKey] != "" {
		t.Error("the PV's own attributes were changed")
	}
	for _, p := range []*v1.Pod{podA, podB} {
		if err := m.TeardownPod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
}

// NodeExpandVolume failures are classified as the kubelet's CSI client
// does: in flight (retry), final (NodeResizeError), infeasible.
func TestExpandError(t *testing.T) {
	for _, tc := range []struct {
		err               error
		final, infeasible bool
	}{
		{status.Error(codes.Unavailable, "restarting"), false, false},
		{status.Error(codes.DeadlineExceeded, "slow"), false, false},
		{status.Error(codes.Aborted, "pending"), false, false},
		{status.Error(codes.Internal, "resize2fs: Permission denied"), true, false},
		{status.Error(codes.FailedPrecondition, "not online"), true, false},
		{status.Error(codes.OutOfRange, "too big"), true, true},
		{status.Error(codes.NotFound, "no volume"), true, true},
		{errors.New("not a gRPC status"), false, false},
	} {
		err := expandError(tc.err, "vol", 1)
		var f interface {
			Final() bool
			Infeasible() bool
		}
		final := errors.As(err, &f)
		if final != tc.final || final && f.Infeasible() != tc.infeasible {
			t.Errorf("%v: final %v, want %v / %v", tc.err, final, tc.final, tc.infeasible)
		}
		if !strings.Contains(err.Error(), "NodeExpandVolume vol to 1 bytes") || !errors.Is(err, tc.err) {
			t.Errorf("%v: error %q does not wrap it", tc.err, err)
		}
	}
}

// Node mode, a CSIDriver with tokenRequests and requiresRepublish (what
// secrets-store drivers use): the publish carries a token of the pod's
// service account per audience (in the volume context, or the secrets
// with serviceAccountTokenInSecrets), and a mounted volume is published
// again each period with fresh ones; a failed republish keeps the mount.
func TestCSITokensAndRepublish(t *testing.T) {
	for _, inSecrets := range []bool{false, true} {
		t.Run(fmt.Sprintf("inSecrets=%v", inSecrets), func(t *testing.T) {
			f := &fakeCSI{}
			no, yes := false, true
			fa := &fakeAttach{inUse: map[v1.UniqueVolumeName]bool{}, specs: map[string]*storagev1.CSIDriverSpec{fakeDriver: {
				AttachRequired: &no, RequiresRepublish: &yes, ServiceAccountTokenInSecrets: &inSecrets,
				TokenRequests: []storagev1.TokenRequest{{Audience: "vault", ExpirationSeconds: i64(3600)}, {Audience: ""}},
			}}}
			tokens := &testTokens{token: "tok-1"}
			m := fakeManagerWith(t, f, func(o *Options) { o.ControllerAttach, o.NodeName, o.Tokens = fa, "node-a", tokens })
			ctx := context.Background()
			eph := v1.Volume{Name: "eph", VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{Driver: fakeDriver}}}
			pod := podWith("u-tok", "p", []v1.Volume{eph}, v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "eph", MountPath: "/eph"}}})
			if _, err := m.SetupPod(ctx, pod, nil); err != nil {
				t.Fatal(err)
			}
			published := func() []*csi.NodePublishVolumeRequest {
				f.mu.Lock()
				defer f.mu.Unlock()
				return append([]*csi.NodePublishVolumeRequest(nil), f.pubs...)
			}
			tokenOf := func(r *csi.NodePublishVolumeRequest) map[string]map[string]string {
				t.Helper()
				raw, elsewhere := r.VolumeContext[csiTokensKey], r.Secrets[csiTokensKey]
				if inSecrets {
					raw, elsewhere = elsewhere, raw
				}
				if elsewhere != "" {
					t.Errorf("tokens in the wrong place (inSecrets %v): %v / %v", inSecrets, r.VolumeContext, r.Secrets)
				}
				var got map[string]map[string]string
				if err := json.Unmarshal([]byte(raw), &got); err != nil {
					t.Fatalf("tokens %q: %v", raw, err)
				}
				return got
			}
			pubs := published()
			if len(pubs) != 1 {
				t.Fatalf("%d publishes, want 1", len(pubs))
			}
			got := tokenOf(pubs[0])
			if len(got) != 2 || got["vault"]["token"] != "tok-1" || got[""]["token"] != "tok-1" || got["vault"]["expirationTimestamp"] == "" {
				t.Fatalf("tokens %v", got)
			}
			tokens.mu.Lock()
			asked := append([]string(nil), tokens.asked...)
			tokens.mu.Unlock()
			if len(asked) != 2 || asked[0] != "u-tok aud=vault exp=3600" || asked[1] != "u-tok aud= exp=0" {
				t.Fatalf("tokens asked: %v", asked)
			}

			// Not due yet: nothing; due: published again with the new token.
			republish := func() {
				m.mu.Lock()
				m.reconcileLocked(ctx)
				m.mu.Unlock()
			}
			republish()
			if n := len(published()); n != 1 {
				t.Fatalf("%d publishes before the period, want 1", n)
			}
			tokens.set("tok-2")
			m.mu.Lock()
			m.pods[pod.UID].state["eph"].published = time.Now().Add(-csiRepublishPeriod)
			m.mu.Unlock()
			republish()
			pubs = published()
			if len(pubs) != 2 || tokenOf(pubs[1])["vault"]["token"] != "tok-2" || pubs[1].TargetPath != pubs[0].TargetPath {
				t.Fatalf("after the period: %d publishes, last %v", len(pubs), pubs[len(pubs)-1])
			}

			// A republish that fails keeps the volume ready.
			tokens.mu.Lock()
			tokens.err = errors.New("apiserver down")
			tokens.mu.Unlock()
			m.mu.Lock()
			m.pods[pod.UID].state["eph"].published = time.Now().Add(-csiRepublishPeriod)
			m.mu.Unlock()
			republish()
			if mounts, err := m.SetupPod(ctx, pod, nil); err != nil || len(mounts["c"]) != 1 {
				t.Fatalf("after a failed republish: %v %v", mounts, err)
			}
			if err := m.TeardownPod(ctx, pod); err != nil {
				t.Fatal(err)
			}
		})
	}
}
