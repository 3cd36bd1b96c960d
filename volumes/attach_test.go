package volumes

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The kubelet's getAttachmentName (pkg/volume/csi/csi_attacher.go):
// fmt.Sprintf("csi-%x", sha256.Sum256([]byte(fmt.Sprintf("%s%s%s",
// volName, csiDriverName, nodeName)))). The expected values were computed
// apart from this code: printf '%s' "<handle><driver><node>" | sha256sum.
func TestAttachmentName(t *testing.T) {
	for _, c := range []struct{ handle, driver, node, want string }{
		{"vol-1", "loop.csi.peapod.io", "node-a", "csi-9fbee0adc125966f60a0ae345823fc793ce37dd7cb472b0f3e1a7d4d703b012a"},
		{"pvc-0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f", "hostpath.csi.k8s.io", "kind-worker", "csi-f2d9462d7ed599192100ef955815955e5cd142be519730f180f9613293e94af2"},
		{"loop-6f1ee2b8e4", "loop.csi.peapod.io", "peapod-agent-0", "csi-2340607f06556f48415a5542711c36a009d900aa2e72e83b62e234d8c1e25301"},
	} {
		if got := AttachmentName(c.handle, c.driver, c.node); got != c.want {
			t.Errorf("AttachmentName(%q, %q, %q) = %s, want %s", c.handle, c.driver, c.node, got, c.want)
		}
	}
	if got := csiUniqueName("loop.csi.peapod.io", "vol-1"); got != "kubernetes.io/csi/loop.csi.peapod.io^vol-1" {
		t.Errorf("unique name %s", got)
	}
}

func TestVAAttached(t *testing.T) {
	now := metav1.Now()
	for _, c := range []struct {
		name    string
		va      *storagev1.VolumeAttachment
		err     error
		wantErr string // "" attached
		notYet  bool
	}{
		{name: "not found", notYet: true, wantErr: "does not exist yet"},
		{name: "GET fails", err: errors.New("boom"), wantErr: "boom"},
		{name: "not attached", va: &storagev1.VolumeAttachment{}, notYet: true, wantErr: "not attached yet"},
		{name: "attach error", va: &storagev1.VolumeAttachment{Status: storagev1.VolumeAttachmentStatus{AttachError: &storagev1.VolumeError{Message: "rpc error: disk is gone"}}},
			wantErr: "rpc error: disk is gone"},
		{name: "being deleted", va: &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Status: storagev1.VolumeAttachmentStatus{Attached: true}},
			wantErr: "being deleted"},
		{name: "attached", va: &storagev1.VolumeAttachment{Status: storagev1.VolumeAttachmentStatus{Attached: true}}},
	} {
		va, err := vaAttached(c.va, c.err)
		switch {
		case c.wantErr == "" && (err != nil || va == nil):
			t.Errorf("%s: %v, want attached", c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr) || (errors.Is(err, errNotAttachedYet) || errors.Is(err, errNoAttachment)) != c.notYet):
			t.Errorf("%s: %v, want %q (not yet: %t)", c.name, err, c.wantErr, c.notYet)
		}
	}
}

// fakeAttach is the API server's side: CSIDrivers, VolumeAttachments and
// the Node's reported volumesInUse.
type fakeAttach struct {
	mu          sync.Mutex
	notRequired map[string]bool // drivers with attachRequired: false
	specs       map[string]*storagev1.CSIDriverSpec
	driverErr   error
	vas         map[string]*storagev1.VolumeAttachment
	inUse       map[v1.UniqueVolumeName]bool
	gets        []string
}

func (f *fakeAttach) CSIDriver(driver string) (*storagev1.CSIDriverSpec, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.driverErr != nil {
		return nil, f.driverErr
	}
	if s := f.specs[driver]; s != nil {
		return s.DeepCopy(), nil
	}
	if f.notRequired[driver] {
		no := false
		return &storagev1.CSIDriverSpec{AttachRequired: &no}, nil
	}
	return nil, nil
}

func (f *fakeAttach) VolumeAttachment(_ context.Context, name string) (*storagev1.VolumeAttachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets = append(f.gets, name)
	return f.vas[name].DeepCopy(), nil
}

func (f *fakeAttach) ReportedInUse(name v1.UniqueVolumeName) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inUse[name]
}

func (f *fakeAttach) set(fn func()) {
	f.mu.Lock()
	fn()
	f.mu.Unlock()
}

func csiPVPod(uid string) *v1.Pod {
	return podWith(uid, "p-"+uid, []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
		PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}},
		v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}}})
}

// retryNow drops every back-off, as time passing would.
func retryNow(m *Manager) {
	m.mu.Lock()
	clear(m.backoffs)
	m.mu.Unlock()
}

// Node mode, a driver that needs an attach (no CSIDriver object): the
// manager waits for the volume to be reported in use, then for its
// VolumeAttachment (the kubelet's name for it) to be attached, each a
// FailedMount with its reason; an attach error is the message; the
// attachment's metadata is NodeStage's and NodePublish's publish_context.
// ControllerPublish/UnpublishVolume are never called, though the driver
// serves them. Teardown unstages and leaves the detach to the controller;
// VolumesInUse lists the volume until it is unstaged.
func TestCSIWaitForAttach(t *testing.T) {
	f := &fakeCSI{stage: true, controller: true}
	fa := &fakeAttach{vas: map[string]*storagev1.VolumeAttachment{}, inUse: map[v1.UniqueVolumeName]bool{}}
	m := fakeManagerWith(t, f, func(o *Options) { o.ControllerAttach, o.NodeName = fa, "node-a" })
	ctx := context.Background()
	objs := csiObjs("vol-1")
	objs.PersistentVolumes[0].Spec.CSI.Driver = fakeDriver
	pod := csiPVPod("u-va")
	unique := csiUniqueName(fakeDriver, "vol-1")
	vaName := AttachmentName("vol-1", fakeDriver, "node-a")

	_, err := m.SetupPod(ctx, pod, objs)
	if err == nil || !strings.Contains(err.Error(), "is not yet reported in use") || !strings.Contains(err.Error(), string(unique)) {
		t.Fatalf("before volumesInUse: %v", err)
	}
	if names, ok := m.VolumesInUse(); !ok || !slices.Equal(names, []v1.UniqueVolumeName{unique}) {
		t.Fatalf("VolumesInUse %v %t, want the pod's volume before it is staged", names, ok)
	}
	fa.set(func() { fa.inUse[unique] = true })

	retryNow(m)
	_, err = m.SetupPod(ctx, pod, objs)
	want := "waiting for VolumeAttachment " + vaName + " (" + fakeDriver + ", node node-a) to be attached"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("no VolumeAttachment: %v, want %q", err, want)
	}
	t.Logf("FailedMount: %v", err)

	fa.set(func() { fa.vas[vaName] = &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: vaName}} })
	retryNow(m)
	if _, err = m.SetupPod(ctx, pod, objs); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("attached=false: %v, want %q", err, want)
	}

	fa.set(func() {
		fa.vas[vaName].Status.AttachError = &storagev1.VolumeError{Message: "ControllerPublishVolume: disk file missing"}
	})
	retryNow(m)
	if _, err = m.SetupPod(ctx, pod, objs); err == nil || !strings.Contains(err.Error(), "ControllerPublishVolume: disk file missing") {
		t.Fatalf("attachError: %v", err)
	}
	if c := f.getCalls(); len(c) != 0 {
		t.Fatalf("driver calls before the attach: %v", c)
	}

	fa.set(func() {
		fa.vas[vaName].Status = storagev1.VolumeAttachmentStatus{Attached: true, AttachmentMetadata: map[string]string{"devicePath": "/dev/loop7"}}
	})
	retryNow(m)
	if _, err = m.SetupPod(ctx, pod, objs); err != nil {
		t.Fatalf("attached: %v", err)
	}
	f.mu.Lock()
	stages, pubs := f.stages, f.pubs
	f.mu.Unlock()
	if len(stages) == 0 || stages[0].PublishContext["devicePath"] != "/dev/loop7" {
		t.Fatalf("NodeStage publish_context: %v", stages)
	}
	if len(pubs) != 1 || pubs[0].PublishContext["devicePath"] != "/dev/loop7" {
		t.Fatalf("NodePublish publish_context: %v", pubs)
	}

	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.getCalls() {
		if strings.HasPrefix(c, "Controller") {
			t.Fatalf("the agent called %s in node mode: %v", c, f.getCalls())
		}
	}
	if !slices.Contains(f.getCalls(), "NodeUnstageVolume") {
		t.Fatalf("no unstage: %v", f.getCalls())
	}
	if names, ok := m.VolumesInUse(); !ok || len(names) != 0 {
		t.Fatalf("VolumesInUse after teardown: %v", names)
	}
}

// Node mode, a CSIDriver with attachRequired: false: no wait, nothing
// reported in use; a CSIDriver that cannot be read yet fails the mount
// (and counts as in use).
func TestCSINoAttachRequired(t *testing.T) {
	f := &fakeCSI{controller: true}
	fa := &fakeAttach{notRequired: map[string]bool{fakeDriver: true}, driverErr: errors.New("the CSIDrivers are not listed from the API server yet")}
	m := fakeManagerWith(t, f, func(o *Options) { o.ControllerAttach, o.NodeName = fa, "node-a" })
	ctx := context.Background()
	objs := csiObjs("vol-2")
	objs.PersistentVolumes[0].Spec.CSI.Driver = fakeDriver
	pod := csiPVPod("u-noatt")
	if _, err := m.SetupPod(ctx, pod, objs); err == nil || !strings.Contains(err.Error(), "not listed from the API server yet") {
		t.Fatalf("CSIDrivers not synced: %v", err)
	}
	if names, _ := m.VolumesInUse(); len(names) != 1 {
		t.Fatalf("VolumesInUse %v, want the volume (unknown driver)", names)
	}
	fa.set(func() { fa.driverErr = nil })
	retryNow(m)
	if _, err := m.SetupPod(ctx, pod, objs); err != nil {
		t.Fatal(err)
	}
	if names, _ := m.VolumesInUse(); len(names) != 0 {
		t.Fatalf("VolumesInUse %v, want none (not attachable)", names)
	}
	if len(fa.gets) != 0 || slices.Contains(f.getCalls(), "ControllerPublishVolume") {
		t.Fatalf("attach calls: gets %v, driver %v", fa.gets, f.getCalls())
	}
	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// Static mode is as before: a driver serving PUBLISH_UNPUBLISH_VOLUME on
// its node endpoint is attached by the agent (ControllerPublishVolume,
// its publish_context to NodeStage) and detached after the unstage.
func TestCSIStaticModeAttachesItself(t *testing.T) {
	f := &fakeCSI{stage: true, controller: true}
	m := fakeManager(t, f)
	ctx := context.Background()
	objs := csiObjs("vol-3")
	objs.PersistentVolumes[0].Spec.CSI.Driver = fakeDriver
	pod := csiPVPod("u-static")
	if _, err := m.SetupPod(ctx, pod, objs); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	stages := f.stages
	f.mu.Unlock()
	if len(stages) == 0 || stages[0].PublishContext["devicePath"] != "/dev/fake" {
		t.Fatalf("NodeStage publish_context: %v", stages)
	}
	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	calls := f.getCalls()
	if len(calls) < 2 || calls[0] != "ControllerPublishVolume" || calls[len(calls)-1] != "ControllerUnpublishVolume" {
		t.Fatalf("calls %v, want ControllerPublishVolume first and ControllerUnpublishVolume last", calls)
	}
}
