package volumes

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Integration tests: real mounts, tmpfs, loop devices, mkfs.ext4. They run
// with PEAPOD_INTEGRATION=1 as root and clean up every mount under their
// temp dir and every loop device backed by their images, even on failure.

func requireIntegration(t *testing.T) {
	t.Helper()
	if os.Getenv("PEAPOD_INTEGRATION") != "1" {
		t.Skip("integration test: set PEAPOD_INTEGRATION=1 (needs root, mount, loop devices, mkfs.ext4)")
	}
	if os.Geteuid() != 0 {
		t.Skip("integration test: needs root")
	}
}

type testEnv struct {
	root    string
	opts    Options
	reg     *prometheus.Registry
	regUsed bool
	images  []string
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	root := t.TempDir()
	e := &testEnv{root: root, reg: prometheus.NewRegistry()}
	e.opts = Options{
		PodsDir:        filepath.Join(root, "pods"),
		PluginDir:      filepath.Join(root, "plugins"),
		GlobalMountDir: filepath.Join(root, "global"),
		StateDir:       filepath.Join(root, "state"),
		Registerer:     e.reg,
	}
	t.Cleanup(func() {
		ms, _ := mountsBeneath(root)
		for _, mp := range ms {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
				t.Logf("cleanup unmount %s: %v", mp, err)
			}
		}
		for _, img := range e.images {
			devs, _ := loopDevicesFor(img)
			for _, d := range devs {
				if err := loopDetach(d); err != nil {
					t.Logf("cleanup detach %s: %v", d, err)
				}
			}
		}
	})
	return e
}

func (e *testEnv) manager(t *testing.T) *Manager {
	t.Helper()
	o := e.opts
	if e.regUsed {
		o.Registerer = prometheus.NewRegistry()
	}
	e.regUsed = true // the first manager registers with env.reg
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// image makes a sparse disk image and registers it for cleanup.
func (e *testEnv) image(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(e.root, "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.images = append(e.images, p)
	return p
}

func losetupJ(t *testing.T, image string) string {
	out, err := exec.Command("losetup", "-j", image).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -j: %v %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func mountCount(t *testing.T, path string) int {
	ms, err := mountsAt(path)
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

func podWith(uid, name string, vols []v1.Volume, containers ...v1.Container) *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(uid), Labels: map[string]string{"app": name}},
		Spec: v1.PodSpec{Volumes: vols, Containers: containers}}
}

func mountFor(t *testing.T, mounts map[string][]*runtimeapi.Mount, container, containerPath string) *runtimeapi.Mount {
	t.Helper()
	for _, m := range mounts[container] {
		if m.ContainerPath == containerPath {
			return m
		}
	}
	t.Fatalf("no mount %s in container %s: %v", containerPath, container, mounts[container])
	return nil
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.Metric {
			for k, v := range labels {
				if !hasLabel(m, k, v) {
					continue next
				}
			}
			if m.Counter != nil {
				sum += m.Counter.GetValue()
			} else if m.Gauge != nil {
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.Label {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

// emptyDir: a memory one is a tmpfs with the size limit, a disk one is the
// same dir for the init container and the main container; teardown
// unmounts and removes both.
func TestIntegrationEmptyDir(t *testing.T) {
	requireIntegration(t)
	e := newEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	limit := resource.MustParse("8Mi")
	pod := podWith("u-empty", "empty", []v1.Volume{
		{Name: "mem", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{Medium: v1.StorageMediumMemory, SizeLimit: &limit}}},
		{Name: "shared", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
	}, v1.Container{Name: "main", VolumeMounts: []v1.VolumeMount{{Name: "mem", MountPath: "/mem"}, {Name: "shared", MountPath: "/usr/share/www"}}})
	pod.Spec.InitContainers = []v1.Container{{Name: "init", VolumeMounts: []v1.VolumeMount{{Name: "shared", MountPath: "/work"}}}}

	mounts, err := m.SetupPod(ctx, pod, nil)
	if err != nil {
		t.Fatal(err)
	}
	memDir := mountFor(t, mounts, "main", "/mem").HostPath
	if want := filepath.Join(e.opts.PodsDir, "u-empty/volumes/kubernetes.io~empty-dir/mem"); memDir != want {
		t.Fatalf("mem at %s, want %s", memDir, want)
	}
	ms, _ := mountsAt(memDir)
	if len(ms) != 1 || ms[0].FSType != "tmpfs" {
		t.Fatalf("mem mounts: %+v", ms)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(memDir, &st); err != nil {
		t.Fatal(err)
	}
	if got := int64(st.Blocks) * st.Bsize; got != 8<<20 {
		t.Fatalf("tmpfs size %d, want %d", got, 8<<20)
	}
	if err := os.WriteFile(filepath.Join(memDir, "big"), make([]byte, 9<<20), 0o644); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing past sizeLimit: %v, want ENOSPC", err)
	}
	// The init container's file is what the main container serves.
	initDir := mountFor(t, mounts, "init", "/work").HostPath
	if mainDir := mountFor(t, mounts, "main", "/usr/share/www").HostPath; mainDir != initDir {
		t.Fatalf("init %s and main %s see different dirs", initDir, mainDir)
	}
	if err := os.WriteFile(filepath.Join(initDir, "index.html"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	// SetupPod again (the agent's next sync) changes nothing.
	if _, err := m.SetupPod(ctx, pod, nil); err != nil {
		t.Fatal(err)
	}
	if n := mountCount(t, memDir); n != 1 {
		t.Fatalf("%d mounts at %s after second SetupPod", n, memDir)
	}

	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if n := mountCount(t, memDir); n != 0 {
		t.Fatalf("tmpfs still mounted")
	}
	if _, err := os.Stat(filepath.Join(e.opts.PodsDir, "u-empty")); !os.IsNotExist(err) {
		t.Fatalf("pod dir left: %v", err)
	}
	if got := counter(t, e.reg, "peapod_volume_operations_total", map[string]string{"operation": "setup", "plugin": "kubernetes.io/empty-dir", "result": "success"}); got != 2 {
		t.Fatalf("setup count %v, want 2", got)
	}
}

func loopObjs(image string) *Objects {
	cls := "loop"
	return &Objects{
		PersistentVolumes: []*v1.PersistentVolume{{ObjectMeta: metav1.ObjectMeta{Name: "pv-disk"}, Spec: v1.PersistentVolumeSpec{
			StorageClassName: "loop", AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Capacity: v1.ResourceList{v1.ResourceStorage: resource.MustParse("64Mi")},
			PersistentVolumeSource: v1.PersistentVolumeSource{FlexVolume: &v1.FlexPersistentVolumeSource{
				Driver: "peapod/loop", FSType: "ext4", Options: map[string]string{"image": image}}},
		}}},
		PersistentVolumeClaims: map[string]*v1.PersistentVolumeClaim{"ns/data": {ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "ns"},
			Spec: v1.PersistentVolumeClaimSpec{StorageClassName: &cls, AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
				Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("32Mi")}}}}},
	}
}

func claimPod(uid string) *v1.Pod {
	return podWith(uid, "db-"+uid, []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
		PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}},
		v1.Container{Name: "db", VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}, {Name: "data", MountPath: "/logs", SubPath: "logs/x"}}})
}

// peapod/loop: attach (loop device), format on first use, global mount,
// bind into the pod; teardown of the only user detaches; the next pod sees
// the data written by the first; kubelet_volume_stats_* are reported.
func TestIntegrationLoopVolumeAcrossPods(t *testing.T) {
	requireIntegration(t)
	e := newEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	image := e.image(t, 64<<20)
	objs := loopObjs(image)

	podA := claimPod("u-a")
	mounts, err := m.SetupPod(ctx, podA, objs)
	if err != nil {
		t.Fatal(err)
	}
	data := mountFor(t, mounts, "db", "/data")
	if want := filepath.Join(e.opts.PodsDir, "u-a/volumes/peapod~loop/pv-disk"); data.HostPath != want {
		t.Fatalf("host path %s, want %s", data.HostPath, want)
	}
	if l := losetupJ(t, image); strings.Count(l, "\n") != 0 || l == "" {
		t.Fatalf("losetup -j: %q, want one device", l)
	}
	global := filepath.Join(e.opts.GlobalMountDir, "peapod~loop/pv-disk")
	gm, _ := mountsAt(global)
	if len(gm) != 1 || gm[0].FSType != "ext4" || !strings.HasPrefix(gm[0].Source, "/dev/loop") {
		t.Fatalf("global mount: %+v", gm)
	}
	if err := os.WriteFile(filepath.Join(data.HostPath, "hello"), []byte("from A"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := mountFor(t, mounts, "db", "/logs")
	if logs.HostPath != filepath.Join(e.opts.PodsDir, "u-a/volume-subpaths/data/db/1") {
		t.Fatalf("subPath host path %s", logs.HostPath)
	}
	if err := os.WriteFile(filepath.Join(logs.HostPath, "l"), []byte("log"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(data.HostPath, "logs/x/l")); string(b) != "log" {
		t.Fatal("subPath does not show the volume's logs/x")
	}
	if c := counter(t, e.reg, "kubelet_volume_stats_capacity_bytes", map[string]string{"namespace": "ns", "persistentvolumeclaim": "data"}); c < 50<<20 {
		t.Fatalf("capacity metric %v", c)
	}
	if c := counter(t, e.reg, "kubelet_volume_stats_inodes_used", map[string]string{"namespace": "ns", "persistentvolumeclaim": "data"}); c < 1 {
		t.Fatalf("inodes_used metric %v", c)
	}

	if err := m.TeardownPod(ctx, podA); err != nil {
		t.Fatal(err)
	}
	if l := losetupJ(t, image); l != "" {
		t.Fatalf("still attached after teardown: %s", l)
	}
	if ms, _ := mountsBeneath(e.root); len(ms) != 0 {
		t.Fatalf("mounts left: %v", ms)
	}

	podB := claimPod("u-b")
	mounts, err = m.SetupPod(ctx, podB, objs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(mountFor(t, mounts, "db", "/data").HostPath, "hello"))
	if err != nil || string(b) != "from A" {
		t.Fatalf("pod B reads %q, %v", b, err)
	}
	if got := counter(t, e.reg, "peapod_volume_operations_total", map[string]string{"operation": "attach", "plugin": "flexvolume-peapod/loop", "result": "success"}); got != 2 {
		t.Fatalf("attach count %v, want 2 (A, then B after detach)", got)
	}
	if err := m.TeardownPod(ctx, podB); err != nil {
		t.Fatal(err)
	}
	if l := losetupJ(t, image); l != "" {
		t.Fatalf("still attached: %s", l)
	}
}

// A second Manager on the same dirs (peapod restarted) adopts the loop
// device and the mounts: no second attach, no stacked mounts, and it can
// tear the pod down.
func TestIntegrationRestartAdoption(t *testing.T) {
	requireIntegration(t)
	e := newEnv(t)
	ctx := context.Background()
	image := e.image(t, 64<<20)
	objs := loopObjs(image)
	pod := claimPod("u-r")

	m1 := e.manager(t)
	if _, err := m1.SetupPod(ctx, pod, objs); err != nil {
		t.Fatal(err)
	}
	before := losetupJ(t, image)
	podVol := filepath.Join(e.opts.PodsDir, "u-r/volumes/peapod~loop/pv-disk")
	global := filepath.Join(e.opts.GlobalMountDir, "peapod~loop/pv-disk")

	reg2 := prometheus.NewRegistry()
	o := e.opts
	o.Registerer = reg2
	m2, err := New(o) // m1 is simply abandoned, as after kill -9
	if err != nil {
		t.Fatal(err)
	}
	if uids := m2.PodUIDs(); len(uids) != 1 || uids[0] != "u-r" {
		t.Fatalf("reconstructed pods %v", uids)
	}
	// The agent syncs the pod again after its own restart.
	mounts, err := m2.SetupPod(ctx, pod, objs)
	if err != nil {
		t.Fatal(err)
	}
	if mountFor(t, mounts, "db", "/data").HostPath != podVol {
		t.Fatal("different host path after restart")
	}
	if after := losetupJ(t, image); after != before {
		t.Fatalf("loop devices changed: before %q after %q", before, after)
	}
	if n := mountCount(t, podVol); n != 1 {
		t.Fatalf("%d mounts at the pod volume", n)
	}
	if n := mountCount(t, global); n != 1 {
		t.Fatalf("%d mounts at the global path", n)
	}
	if n := mountCount(t, filepath.Join(e.opts.PodsDir, "u-r/volume-subpaths/data/db/1")); n != 1 {
		t.Fatalf("%d mounts at the subPath", n)
	}
	if got := counter(t, reg2, "peapod_volume_operations_total", map[string]string{"operation": "attach", "result": "success"}); got != 0 {
		t.Fatalf("new manager attached %v times", got)
	}
	if got := counter(t, reg2, "peapod_volume_operations_total", map[string]string{"operation": "attach", "result": "adopted"}); got != 1 {
		t.Fatalf("adopted attach count %v, want 1", got)
	}
	if err := m2.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if l := losetupJ(t, image); l != "" {
		t.Fatalf("still attached: %s", l)
	}
	if ms, _ := mountsBeneath(e.root); len(ms) != 0 {
		t.Fatalf("mounts left: %v", ms)
	}
}

// configMap and secret volumes: projected atomically, the secret on tmpfs,
// updated in place by UpdateObjects (..data points at the new version);
// subPaths that escape through symlinks are refused.
func TestIntegrationConfigMapUpdateAndSubPathEscape(t *testing.T) {
	requireIntegration(t)
	e := newEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "ns"}, Data: map[string]string{"app.conf": "v1"}}
	sec := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec", Namespace: "ns"}, Data: map[string][]byte{"token": []byte("t1")}}
	objs := &Objects{ConfigMaps: map[string]*v1.ConfigMap{"ns/cfg": cm}, Secrets: map[string]*v1.Secret{"ns/sec": sec}}
	pod := podWith("u-cm", "cm", []v1.Volume{
		{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}}},
		{Name: "sec", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "sec", DefaultMode: i32(0o400)}}},
		{Name: "info", VolumeSource: v1.VolumeSource{DownwardAPI: &v1.DownwardAPIVolumeSource{Items: []v1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
	}, v1.Container{Name: "app", VolumeMounts: []v1.VolumeMount{{Name: "cfg", MountPath: "/etc/app"}, {Name: "sec", MountPath: "/run/sec"}, {Name: "info", MountPath: "/info"}}})
	mounts, err := m.SetupPod(ctx, pod, objs)
	if err != nil {
		t.Fatal(err)
	}
	cfgDir := mountFor(t, mounts, "app", "/etc/app").HostPath
	secDir := mountFor(t, mounts, "app", "/run/sec").HostPath
	if got := mustRead(t, filepath.Join(cfgDir, "app.conf")); got != "v1" {
		t.Fatalf("app.conf = %q", got)
	}
	if ms, _ := mountsAt(secDir); len(ms) != 1 || ms[0].FSType != "tmpfs" {
		t.Fatalf("secret volume not on tmpfs: %+v", ms)
	}
	if st, _ := os.Stat(filepath.Join(secDir, "token")); st == nil || st.Mode().Perm() != 0o400 {
		t.Fatalf("token mode %v", st)
	}
	if got := mustRead(t, filepath.Join(mountFor(t, mounts, "app", "/info").HostPath, "labels")); got != "app=\"cm\"\n" {
		t.Fatalf("labels = %q", got)
	}
	oldTS := readLink(t, filepath.Join(cfgDir, "..data"))

	cm2 := cm.DeepCopy()
	cm2.Data["app.conf"] = "v2"
	sec2 := sec.DeepCopy()
	sec2.Data["token"] = []byte("t2")
	m.UpdateObjects(&Objects{ConfigMaps: map[string]*v1.ConfigMap{"ns/cfg": cm2}, Secrets: map[string]*v1.Secret{"ns/sec": sec2}})
	newTS := readLink(t, filepath.Join(cfgDir, "..data"))
	if newTS == oldTS {
		t.Fatal("..data not swapped")
	}
	if got := mustRead(t, filepath.Join(cfgDir, "..data", "app.conf")); got != "v2" {
		t.Fatalf("after update app.conf = %q", got)
	}
	if got := mustRead(t, filepath.Join(secDir, "token")); got != "t2" {
		t.Fatalf("after update token = %q", got)
	}

	// subPath escapes through symlinks in the volume are refused (a
	// hostPath volume, so every pod sees the same planted symlinks).
	scratch := filepath.Join(e.root, "scratch")
	os.MkdirAll(filepath.Join(scratch, "ok"), 0o755)
	os.Symlink("/", filepath.Join(scratch, "root"))
	os.Symlink("/etc", filepath.Join(scratch, "etc"))
	os.Symlink(filepath.Join(scratch, "ok"), filepath.Join(scratch, "abs-inside"))
	os.Symlink("../../../../../../..", filepath.Join(scratch, "up"))
	esc := podWith("u-esc", "esc", []v1.Volume{{Name: "scratch", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: scratch}}}},
		v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "scratch", MountPath: "/s", SubPath: "ok"}}})
	mounts, err = m.SetupPod(ctx, esc, nil)
	if err != nil {
		t.Fatal(err)
	}
	okMount := mountFor(t, mounts, "c", "/s").HostPath
	if n := mountCount(t, okMount); n != 1 {
		t.Fatalf("subPath ok not bind-mounted (%d)", n)
	}
	os.WriteFile(filepath.Join(scratch, "ok", "f"), []byte("in"), 0o644)
	if got := mustRead(t, filepath.Join(okMount, "f")); got != "in" {
		t.Fatalf("subPath mount shows %q", got)
	}
	for _, sub := range []string{"root", "etc", "abs-inside", "up/etc", "root/tmp", "../x"} {
		bad := esc.DeepCopy()
		bad.UID = types.UID("u-esc-" + strings.NewReplacer("/", "-", ".", "d").Replace(sub))
		bad.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "scratch", MountPath: "/x", SubPath: sub}}
		if _, err := m.SetupPod(ctx, bad, nil); err == nil || !strings.Contains(err.Error(), "subPath") {
			t.Errorf("subPath %q: err = %v, want refused", sub, err)
		}
		if err := m.TeardownPod(ctx, bad); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []*v1.Pod{pod, esc} {
		if err := m.TeardownPod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if ms, _ := mountsBeneath(e.root); len(ms) != 0 {
		t.Fatalf("mounts left: %v", ms)
	}
}

// subPathExpr expands against the container's environment, envFrom
// included, and is bind-mounted; a missing non-optional configMapKeyRef is
// an error naming the ConfigMap, an optional one leaves its variable unset.
func TestIntegrationSubPathExpr(t *testing.T) {
	requireIntegration(t)
	e := newEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	objs := &Objects{ConfigMaps: map[string]*v1.ConfigMap{"ns/cfg": {ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "ns"},
		Data: map[string]string{"dir": "logs"}}}}
	yes := true
	missing := func(opt *bool) v1.EnvVar {
		return v1.EnvVar{Name: "GONE", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{
			LocalObjectReference: v1.LocalObjectReference{Name: "nocm"}, Key: "k", Optional: opt}}}
	}
	mk := func(uid string, env []v1.EnvVar, expr string) *v1.Pod {
		return podWith(uid, "sp-"+uid, []v1.Volume{{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}},
			v1.Container{Name: "app",
				EnvFrom: []v1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}}},
				Env:     env, VolumeMounts: []v1.VolumeMount{{Name: "scratch", MountPath: "/out", SubPathExpr: expr}}})
	}
	pod := mk("u-spe", []v1.EnvVar{{Name: "POD", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
		"$(CFG_dir)/$(POD)")
	mounts, err := m.SetupPod(ctx, pod, objs)
	if err != nil {
		t.Fatal(err)
	}
	out := mountFor(t, mounts, "app", "/out").HostPath
	if n := mountCount(t, out); n != 1 {
		t.Fatalf("subPathExpr not bind-mounted at %s (%d)", out, n)
	}
	vol := filepath.Join(e.opts.PodsDir, "u-spe/volumes/kubernetes.io~empty-dir/scratch")
	os.WriteFile(filepath.Join(vol, "logs", "sp-u-spe", "f"), []byte("in"), 0o644)
	if got := mustRead(t, filepath.Join(out, "f")); got != "in" {
		t.Fatalf("subPathExpr mount shows %q, want the volume's logs/sp-u-spe", got)
	}
	for _, tc := range []struct {
		uid  string
		env  []v1.EnvVar
		want string
	}{
		{"u-spe-req", []v1.EnvVar{missing(nil)}, `container "app": environment for subPathExpr: configmap "nocm" not found`},
		{"u-spe-opt", []v1.EnvVar{missing(&yes)}, `container "app": subPathExpr "$(CFG_dir)/$(GONE)": missing value for GONE`},
	} {
		bad := mk(tc.uid, tc.env, "$(CFG_dir)/$(GONE)")
		if _, err := m.SetupPod(ctx, bad, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.uid, err, tc.want)
		}
		if err := m.TeardownPod(ctx, bad); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if ms, _ := mountsBeneath(e.root); len(ms) != 0 {
		t.Fatalf("mounts left: %v", ms)
	}
}

// An external FlexVolume driver (an sh script in PluginDir) that attaches a
// loop device with losetup and answers "Not supported" for waitforattach,
// mountdevice, mount, unmount and unmountdevice: peapod falls back as the
// kubelet does (keep device, format+mount, bind, unmount) and detaches
// through the driver.
func TestIntegrationExternalFlexDriver(t *testing.T) {
	requireIntegration(t)
	e := newEnv(t)
	image := e.image(t, 64<<20)
	drvDir := filepath.Join(e.opts.PluginDir, "example.com~ldisk")
	os.MkdirAll(drvDir, 0o755)
	calls := filepath.Join(e.root, "calls")
	script := `#!/bin/sh
echo "$1" >> ` + calls + `
case "$1" in
init) echo '{"status":"Success","capabilities":{"attach":true}}' ;;
attach) dev=$(losetup -f --show ` + image + `) || { echo '{"status":"Failure","message":"losetup failed"}'; exit 1; }
        echo "{\"status\":\"Success\",\"device\":\"$dev\"}" ;;
detach) for d in $(losetup -j ` + image + ` | cut -d: -f1); do losetup -d $d; done
        echo '{"status":"Success"}' ;;
*) echo '{"status":"Not supported"}' ;;
esac
`
	if err := os.WriteFile(filepath.Join(drvDir, "ldisk"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	m := e.manager(t)
	ctx := context.Background()
	pod := podWith("u-ext", "ext", []v1.Volume{{Name: "disk", VolumeSource: v1.VolumeSource{FlexVolume: &v1.FlexVolumeSource{
		Driver: "example.com/ldisk", FSType: "ext4", Options: map[string]string{"size": "64Mi"}}}}},
		v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "disk", MountPath: "/disk"}}})
	mounts, err := m.SetupPod(ctx, pod, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := mountFor(t, mounts, "c", "/disk").HostPath
	if !strings.HasPrefix(dir, filepath.Join(e.opts.PodsDir, "u-ext/volumes/example.com~ldisk/")) {
		t.Fatalf("dir %s", dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "lost+found")); err != nil {
		t.Fatalf("not the formatted disk: %v", err)
	}
	if losetupJ(t, image) == "" {
		t.Fatal("driver did not attach")
	}
	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if l := losetupJ(t, image); l != "" {
		t.Fatalf("still attached: %s", l)
	}
	got := strings.Fields(strings.ReplaceAll(string(mustReadFile(t, calls)), "\n", " "))
	want := "init attach waitforattach mountdevice mount unmount unmountdevice detach"
	if strings.Join(got, " ") != want {
		t.Fatalf("driver calls %q, want %q", strings.Join(got, " "), want)
	}
	if ms, _ := mountsBeneath(e.root); len(ms) != 0 {
		t.Fatalf("mounts left: %v", ms)
	}
}

func mustReadFile(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A mountdevice that fails (a read-only disk without a filesystem cannot be
// formatted) leaves no global mount dir and no pod dir; TeardownPod still
// detaches the loop device the attach made.
func TestIntegrationFailedMountLeavesNothing(t *testing.T) {
	requireIntegration(t)
	e := newEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	image := e.image(t, 16<<20)
	pod := podWith("u-fail", "fail", []v1.Volume{{Name: "d", VolumeSource: v1.VolumeSource{FlexVolume: &v1.FlexVolumeSource{
		Driver: "peapod/loop", FSType: "ext4", ReadOnly: true, Options: map[string]string{"image": image}}}}},
		v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "d", MountPath: "/d"}}})
	_, err := m.SetupPod(ctx, pod, nil)
	if err == nil || !strings.Contains(err.Error(), "cannot format") {
		t.Fatalf("SetupPod: %v", err)
	}
	if ms, _ := mountsBeneath(e.root); len(ms) != 0 {
		t.Fatalf("mounts after failure: %v", ms)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.opts.GlobalMountDir, "peapod~loop")); len(ents) != 0 {
		t.Fatalf("global dir left: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(e.opts.PodsDir, "u-fail", "volumes")); !os.IsNotExist(err) {
		t.Fatalf("pod volume dir created: %v", err)
	}
	if got := counter(t, e.reg, "peapod_volume_operations_total", map[string]string{"operation": "mount_device", "result": "failure"}); got != 1 {
		t.Fatalf("mount_device failures %v", got)
	}
	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if l := losetupJ(t, image); l != "" {
		t.Fatalf("still attached: %s", l)
	}
}
