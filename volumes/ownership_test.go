package volumes

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testFSGroup is a group the test can chown to: as root in an integration
// run one nobody has (4321), so a gid that matches proves the chown;
// otherwise the test's own group, which needs no privilege (and proves
// less: the files have it already).
func testFSGroup() int64 {
	if os.Getenv("PEAPOD_INTEGRATION") == "1" && os.Geteuid() == 0 {
		return 4321
	}
	return int64(os.Getgid())
}

// modeGid is path's mode and group, not following a symlink.
func modeGid(t *testing.T, path string) (os.FileMode, int64) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode(), int64(fi.Sys().(*syscall.Stat_t).Gid)
}

// wantModeGid checks path's mode (type bits included) and, when gid >= 0,
// its group; a symlink's own (a projected volume's files are under ..data).
func wantModeGid(t *testing.T, path string, mode os.FileMode, gid int64) {
	t.Helper()
	m, g := modeGid(t, path)
	if m != mode {
		t.Errorf("%s: mode %v, want %v", path, m, mode)
	}
	if gid >= 0 && g != gid {
		t.Errorf("%s: gid %d, want %d", path, g, gid)
	}
}

func podWithFSGroup(g *int64, policy *v1.PodFSGroupChangePolicy) *v1.Pod {
	p := testPod()
	p.Spec.SecurityContext = &v1.PodSecurityContext{FSGroup: g, FSGroupChangePolicy: policy}
	return p
}

func TestOwnershipFor(t *testing.T) {
	g := int64(1234)
	onRoot, always := v1.FSGroupChangeOnRootMismatch, v1.FSGroupChangeAlways
	cases := []struct {
		name        string
		pod         *v1.Pod
		vs          volumeSpec
		flexFSGroup bool
		want        *volumeOwnership
	}{
		{name: "no securityContext", pod: testPod(), vs: volumeSpec{Kind: kindEmptyDir}},
		{name: "securityContext without fsGroup", pod: podWithFSGroup(nil, &onRoot), vs: volumeSpec{Kind: kindLocal}},
		{name: "emptyDir: read-write, the policy does not apply", pod: podWithFSGroup(&g, &onRoot), vs: volumeSpec{Kind: kindEmptyDir},
			want: &volumeOwnership{fsGroup: g}},
		{name: "configMap: read-only", pod: podWithFSGroup(&g, &onRoot), vs: volumeSpec{Kind: kindConfigMap},
			want: &volumeOwnership{fsGroup: g, readOnly: true}},
		{name: "secret: read-only", pod: podWithFSGroup(&g, nil), vs: volumeSpec{Kind: kindSecret},
			want: &volumeOwnership{fsGroup: g, readOnly: true}},
		{name: "downwardAPI: read-only", pod: podWithFSGroup(&g, nil), vs: volumeSpec{Kind: kindDownwardAPI},
			want: &volumeOwnership{fsGroup: g, readOnly: true}},
		{name: "projected: read-only", pod: podWithFSGroup(&g, nil), vs: volumeSpec{Kind: kindProjected},
			want: &volumeOwnership{fsGroup: g, readOnly: true}},
		{name: "local, OnRootMismatch", pod: podWithFSGroup(&g, &onRoot), vs: volumeSpec{Kind: kindLocal},
			want: &volumeOwnership{fsGroup: g, onRootMismatch: true}},
		{name: "local, Always", pod: podWithFSGroup(&g, &always), vs: volumeSpec{Kind: kindLocal},
			want: &volumeOwnership{fsGroup: g}},
		{name: "local, read-only claim: left alone", pod: podWithFSGroup(&g, nil), vs: volumeSpec{Kind: kindLocal, ReadOnly: true}},
		{name: "flex with the fsGroup capability", pod: podWithFSGroup(&g, &onRoot), vs: volumeSpec{Kind: kindFlex}, flexFSGroup: true,
			want: &volumeOwnership{fsGroup: g, onRootMismatch: true}},
		{name: "flex without it", pod: podWithFSGroup(&g, nil), vs: volumeSpec{Kind: kindFlex}},
		{name: "flex, read-only", pod: podWithFSGroup(&g, nil), vs: volumeSpec{Kind: kindFlex, ReadOnly: true}, flexFSGroup: true},
		{name: "hostPath: never", pod: podWithFSGroup(&g, &always), vs: volumeSpec{Kind: kindHostPath}, flexFSGroup: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ownershipFor(tc.pod, &tc.vs, tc.flexFSGroup); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ownershipFor = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The kubelet's changeFilePermission: group rw (r for a read-only volume)
// added, directories also group x and setgid; nothing taken away.
func TestOwnershipModes(t *testing.T) {
	d, sgid, sticky := os.ModeDir, os.ModeSetgid, os.ModeSticky
	cases := []struct {
		name     string
		readOnly bool
		in, want os.FileMode
	}{
		{name: "file 0644", in: 0o644, want: 0o664},
		{name: "file 0600", in: 0o600, want: 0o660},
		{name: "file 0400 gets group write too", in: 0o400, want: 0o660},
		{name: "setuid file keeps it", in: os.ModeSetuid | 0o755, want: os.ModeSetuid | 0o775},
		{name: "dir 0755", in: d | 0o755, want: d | sgid | 0o775},
		{name: "dir 0700", in: d | 0o700, want: d | sgid | 0o770},
		{name: "emptyDir root 0777", in: d | 0o777, want: d | sgid | 0o777},
		{name: "tmpfs root 1777", in: d | sticky | 0o777, want: d | sgid | sticky | 0o777},
		{name: "ro: defaultMode 0400", readOnly: true, in: 0o400, want: 0o440},
		{name: "ro: defaultMode 0440", readOnly: true, in: 0o440, want: 0o440},
		{name: "ro: 0644", readOnly: true, in: 0o644, want: 0o644},
		{name: "ro: token 0600", readOnly: true, in: 0o600, want: 0o640},
		{name: "ro: timestamped dir 0755", readOnly: true, in: d | 0o755, want: d | sgid | 0o755},
		{name: "ro: dir 0700", readOnly: true, in: d | 0o700, want: d | sgid | 0o750},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := &volumeOwnership{fsGroup: 1, readOnly: tc.readOnly}
			got := o.fileMode(tc.in)
			if tc.in.IsDir() {
				got = o.dirMode(tc.in)
			}
			if got != tc.want {
				t.Errorf("%v → %v, want %v", tc.in, got, tc.want)
			}
		})
	}
	var none *volumeOwnership
	if none.fileMode(0o600) != 0o600 || none.dirMode(d|0o700) != d|0o700 {
		t.Error("no ownership changes modes")
	}
}

// apply walks the whole tree; symlinks get the group but their targets,
// inside or outside the volume, keep their mode.
func TestOwnershipApply(t *testing.T) {
	g := testFSGroup()
	d, sgid, link := os.ModeDir, os.ModeSetgid, os.ModeSymlink|0o777
	cases := []struct {
		name     string
		readOnly bool
		want     map[string]os.FileMode // relative to the volume; "" is the root
	}{
		{name: "read-write", want: map[string]os.FileMode{
			"": d | sgid | 0o775, "f": 0o660, "d": d | sgid | 0o770, "d/g": 0o664, "d/e": d | sgid | 0o775,
			"in": link, "out": link}},
		{name: "read-only", readOnly: true, want: map[string]os.FileMode{
			"": d | sgid | 0o755, "f": 0o640, "d": d | sgid | 0o750, "d/g": 0o444, "d/e": d | sgid | 0o755,
			"in": link, "out": link}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vol, outside := filepath.Join(t.TempDir(), "vol"), t.TempDir()
			for _, step := range []error{
				os.Mkdir(vol, 0o755),
				os.WriteFile(filepath.Join(vol, "f"), nil, 0o600),
				os.Mkdir(filepath.Join(vol, "d"), 0o700),
				os.WriteFile(filepath.Join(vol, "d/g"), nil, 0o444),
				os.Mkdir(filepath.Join(vol, "d/e"), 0o755),
				os.Symlink("f", filepath.Join(vol, "in")),
				os.WriteFile(filepath.Join(outside, "secret"), nil, 0o600),
				os.Symlink(filepath.Join(outside, "secret"), filepath.Join(vol, "out")),
			} {
				if step != nil {
					t.Fatal(step)
				}
			}
			for p, mode := range map[string]os.FileMode{"": 0o755, "f": 0o600, "d": 0o700, "d/g": 0o444, "d/e": 0o755} {
				if err := os.Chmod(filepath.Join(vol, p), mode); err != nil { // exact, whatever the umask
					t.Fatal(err)
				}
			}
			_, outGid := modeGid(t, filepath.Join(outside, "secret"))
			o := &volumeOwnership{fsGroup: g, readOnly: tc.readOnly}
			if err := o.apply(vol); err != nil {
				t.Fatal(err)
			}
			for p, mode := range tc.want {
				wantModeGid(t, filepath.Join(vol, p), mode, g)
			}
			// f had 0600 before; "in" points at it and did not widen it further.
			wantModeGid(t, filepath.Join(outside, "secret"), 0o600, outGid)
			if !o.rootMatches(vol) {
				t.Error("the root does not match after apply")
			}
		})
	}
}

// OnRootMismatch: a root with the group, setgid and the mask's bits is not
// walked; anything else is. The emptyDir's "set up again after a restart"
// uses the same check.
func TestOwnershipRootMismatch(t *testing.T) {
	g := testFSGroup()
	cases := []struct {
		name      string
		readOnly  bool
		rootMode  os.FileMode // chmod bits (setgid as os.ModeSetgid)
		rootGroup int64       // the fsGroup asked for is rootGroup+this
		rootFile  bool        // the root is a file, not a directory
		want      bool        // rootMatches
	}{
		{name: "group, setgid, rwx", rootMode: os.ModeSetgid | 0o770, want: true},
		{name: "and more bits", rootMode: os.ModeSetgid | 0o777, want: true},
		{name: "no setgid", rootMode: 0o770},
		{name: "group r-x only", rootMode: os.ModeSetgid | 0o750},
		{name: "group r-x is enough for a read-only volume", readOnly: true, rootMode: os.ModeSetgid | 0o750, want: true},
		{name: "another group", rootMode: os.ModeSetgid | 0o770, rootGroup: 1},
		{name: "a file", rootMode: 0o770, rootFile: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vol := filepath.Join(t.TempDir(), "vol")
			child := filepath.Join(vol, "child")
			if tc.rootFile {
				child = vol
			} else if err := os.Mkdir(vol, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(child, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(vol, -1, int(g)); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(vol, tc.rootMode); err != nil {
				t.Fatal(err)
			}
			o := &volumeOwnership{fsGroup: g + tc.rootGroup, readOnly: tc.readOnly, onRootMismatch: true}
			if got := o.rootMatches(vol); got != tc.want {
				t.Fatalf("rootMatches = %v, want %v", got, tc.want)
			}
			if tc.rootGroup != 0 {
				return // chown to that group needs root
			}
			if err := o.change(vol); err != nil {
				t.Fatal(err)
			}
			m, _ := modeGid(t, child)
			if walked := m.Perm() != 0o600; walked == tc.want {
				t.Errorf("child mode %v: walked %v, root matched %v", m, walked, tc.want)
			}
		})
	}
}

// Atomic writer volumes: each new version gets the group and group read
// before it is swapped in, the whole volume is walked (root, symlinks), and
// an unchanged payload is recognised as unchanged despite the wider modes.
func TestAtomicWriterFSGroup(t *testing.T) {
	g := testFSGroup()
	dir := filepath.Join(t.TempDir(), "vol")
	if err := setupDirPerm(dir); err != nil {
		t.Fatal(err)
	}
	w := &atomicWriter{dir: dir, owner: &volumeOwnership{fsGroup: g, readOnly: true}}
	want := map[string]os.FileMode{"a": 0o440, "sub/b": 0o644, "token": 0o640}
	check := func(step string) {
		t.Helper()
		for p, mode := range want {
			wantModeGid(t, filepath.Join(dir, dataDirName, p), mode, g)
		}
		wantModeGid(t, dir, os.ModeDir|os.ModeSetgid|0o777, g)
		ts := filepath.Join(dir, readLink(t, filepath.Join(dir, dataDirName)))
		wantModeGid(t, ts, os.ModeDir|os.ModeSetgid|0o755, g)
		wantModeGid(t, filepath.Join(ts, "sub"), os.ModeDir|os.ModeSetgid|0o755, g)
		for _, l := range []string{"a", "sub", "token"} {
			if _, gid := modeGid(t, filepath.Join(dir, l)); gid != g {
				t.Errorf("%s: symlink %s gid %d, want %d", step, l, gid, g)
			}
		}
	}
	payload := func(a, token string) map[string]fileProjection {
		return map[string]fileProjection{
			"a":     {Data: []byte(a), Mode: 0o400},
			"sub/b": {Data: []byte("B"), Mode: 0o644},
			"token": {Data: []byte(token), Mode: 0o600},
		}
	}
	if err := w.Write(payload("A", "t1")); err != nil {
		t.Fatal(err)
	}
	check("first write")
	first := readLink(t, filepath.Join(dir, dataDirName))

	if err := w.Write(payload("A", "t1")); err != nil {
		t.Fatal(err)
	}
	if got := readLink(t, filepath.Join(dir, dataDirName)); got != first {
		t.Fatalf("unchanged payload written again (%s → %s): the group-read modes count as a change", first, got)
	}

	// Re-projection (an update, a rotated token): the new version has its
	// group and modes before readers can see it.
	w.beforeSwap = func() {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if n := e.Name(); strings.HasPrefix(n, "..") && e.IsDir() && n != first {
				wantModeGid(t, filepath.Join(dir, n, "token"), 0o640, g)
				wantModeGid(t, filepath.Join(dir, n, "a"), 0o440, g)
			}
		}
	}
	if err := w.Write(payload("A2", "t2")); err != nil {
		t.Fatal(err)
	}
	if readLink(t, filepath.Join(dir, dataDirName)) == first || mustRead(t, filepath.Join(dir, "token")) != "t2" {
		t.Fatal("update not swapped in")
	}
	check("update")
}

// With an fsGroup the token is written 0600 and the ownership makes it
// 0640, whatever defaultMode says (the kubelet's projected.go).
func TestTokenModeWithFSGroup(t *testing.T) {
	g := testFSGroup()
	cases := []struct {
		name        string
		fsGroup     *int64
		defaultMode *int32
		payload     os.FileMode
		onDisk      os.FileMode
	}{
		{name: "no fsGroup, default mode", payload: 0o644, onDisk: 0o644},
		{name: "no fsGroup, defaultMode 0400", defaultMode: i32(0o400), payload: 0o400, onDisk: 0o400},
		{name: "fsGroup, default mode", fsGroup: &g, payload: 0o600, onDisk: 0o640},
		{name: "fsGroup, defaultMode 0444", fsGroup: &g, defaultMode: i32(0o444), payload: 0o600, onDisk: 0o640},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := podWithFSGroup(tc.fsGroup, nil)
			vs := &volumeSpec{Kind: kindProjected, Source: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{DefaultMode: tc.defaultMode,
				Sources: []v1.VolumeProjection{{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token"}}}}}}
			p, err := projectedPayload(context.Background(), pod, vs.Source.Projected, nil, &testTokens{token: "tok"})
			if err != nil {
				t.Fatal(err)
			}
			if p["token"].Mode != tc.payload {
				t.Errorf("payload mode %v, want %v", p["token"].Mode, tc.payload)
			}
			dir := t.TempDir()
			if err := (&atomicWriter{dir: dir, owner: ownershipFor(pod, vs, false)}).Write(p); err != nil {
				t.Fatal(err)
			}
			wantModeGid(t, filepath.Join(dir, dataDirName, "token"), tc.onDisk, -1)
		})
	}
}

// The Manager without mounts (disk emptyDir, configMap, hostPath, a flex
// driver that mounts nothing): fsGroup on the volumes that take it, the
// projected kinds read-only in containers, re-projection keeps the group.
func TestSetupPodFSGroupWithoutMounts(t *testing.T) {
	g := testFSGroup()
	e := newEnv(t)
	e.opts.Registerer = nil
	m := e.manager(t)
	ctx := context.Background()
	host := filepath.Join(e.root, "host")
	if err := os.Mkdir(host, 0o700); err != nil {
		t.Fatal(err)
	}
	_, hostGid := modeGid(t, host)
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "ns"}, Data: map[string]string{"k": "v1"}}
	objs := &Objects{ConfigMaps: map[string]*v1.ConfigMap{"ns/cfg": cm}}
	vols := []v1.Volume{
		{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
		{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"},
			DefaultMode: i32(0o400)}}},
		{Name: "host", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: host}}},
	}
	c := v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "scratch", MountPath: "/s"}, {Name: "cfg", MountPath: "/cfg"}, {Name: "host", MountPath: "/h"}}}
	d, sgid := os.ModeDir, os.ModeSetgid

	cases := []struct {
		name    string
		fsGroup *int64
		gid     int64 // of the emptyDir and the configMap files; -1: not checked
		scratch os.FileMode
		cfgRoot os.FileMode
		cfgFile os.FileMode
	}{
		{name: "no fsGroup", gid: -1, scratch: d | 0o777, cfgRoot: d | 0o777, cfgFile: 0o400},
		{name: "fsGroup", fsGroup: &g, gid: g, scratch: d | sgid | 0o777, cfgRoot: d | sgid | 0o777, cfgFile: 0o440},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := podWith("u-fs-"+string(rune('a'+i)), "fs", vols, c)
			pod.Spec.SecurityContext = &v1.PodSecurityContext{FSGroup: tc.fsGroup}
			mounts, err := m.SetupPod(ctx, pod, objs)
			if err != nil {
				t.Fatal(err)
			}
			scratch := mountFor(t, mounts, "c", "/s")
			cfg := mountFor(t, mounts, "c", "/cfg")
			if scratch.Readonly || !cfg.Readonly || mountFor(t, mounts, "c", "/h").Readonly {
				t.Errorf("read-only: emptyDir %v, configMap %v (want only the configMap)", scratch.Readonly, cfg.Readonly)
			}
			wantModeGid(t, scratch.HostPath, tc.scratch, tc.gid)
			wantModeGid(t, cfg.HostPath, tc.cfgRoot, tc.gid)
			wantModeGid(t, filepath.Join(cfg.HostPath, dataDirName, "k"), tc.cfgFile, tc.gid)
			wantModeGid(t, host, d|0o700, hostGid)

			// What the pod creates in its emptyDir is the fsGroup's.
			if err := os.WriteFile(filepath.Join(scratch.HostPath, "new"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.fsGroup != nil {
				wantModeGid(t, filepath.Join(scratch.HostPath, "new"), 0o644, g)
			}

			// An update keeps group and modes.
			cm2 := cm.DeepCopy()
			cm2.Data["k"] = "v2-" + tc.name
			m.UpdateObjects(&Objects{ConfigMaps: map[string]*v1.ConfigMap{"ns/cfg": cm2}})
			if got := mustRead(t, filepath.Join(cfg.HostPath, "k")); got != cm2.Data["k"] {
				t.Fatalf("after update k = %q", got)
			}
			wantModeGid(t, filepath.Join(cfg.HostPath, dataDirName, "k"), tc.cfgFile, tc.gid)
			if err := m.TeardownPod(ctx, pod); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A flex driver gets the fsGroup as kubernetes.io/mounterArgs.FsGroup; the
// volume is chowned when the driver has the fsGroup capability (the
// kubelet's default) and the volume is not read-only.
func TestFlexMountFSGroup(t *testing.T) {
	g := testFSGroup()
	cases := []struct {
		name     string
		caps     string // init's capabilities
		readOnly bool
		changed  bool
	}{
		{name: "capability by default", caps: `{"attach":false}`, changed: true},
		{name: "fsGroup:false", caps: `{"attach":false,"fsGroup":false}`},
		{name: "read-only", caps: `{"attach":false}`, readOnly: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.opts.Registerer = nil
			writeFakeDriver(t, e.opts.PluginDir, `
case "$1" in
init) echo '{"status":"Success","capabilities":`+tc.caps+`}' ;;
mount|unmount) echo '{"status":"Success"}' ;;
*) echo '{"status":"Not supported"}' ;;
esac
`)
			m := e.manager(t)
			pod := podWith("u-flex", "flex", []v1.Volume{{Name: "f", VolumeSource: v1.VolumeSource{FlexVolume: &v1.FlexVolumeSource{
				Driver: "test/fake", ReadOnly: tc.readOnly}}}},
				v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "f", MountPath: "/f"}}})
			pod.Spec.SecurityContext = &v1.PodSecurityContext{FSGroup: &g}
			mounts, err := m.SetupPod(context.Background(), pod, nil)
			if err != nil {
				t.Fatal(err)
			}
			dir := mountFor(t, mounts, "c", "/f").HostPath
			mode, _ := modeGid(t, dir)
			if changed := mode&os.ModeSetgid != 0; changed != tc.changed {
				t.Errorf("volume dir %v: ownership applied %v, want %v", mode, changed, tc.changed)
			}
			if tc.changed {
				wantModeGid(t, dir, os.ModeDir|os.ModeSetgid|0o770, g)
			}
			var mountCall string
			for _, c := range readCalls(t, e.opts.PluginDir) {
				if strings.HasPrefix(c, "mount ") {
					mountCall = c
				}
			}
			if want := `"kubernetes.io/mounterArgs.FsGroup":"` + strconv.FormatInt(g, 10) + `"`; !strings.Contains(mountCall, want) {
				t.Errorf("mount call %q lacks %s", mountCall, want)
			}
			if err := m.TeardownPod(context.Background(), pod); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A driver's init answer is decoded over the kubelet's defaults: what it
// leaves out is true.
func TestFlexCapabilityDefaults(t *testing.T) {
	cases := []struct {
		init string
		want flexCapabilities
	}{
		{init: `{"status":"Success"}`, want: flexCapabilities{Attach: true, SELinuxRelabel: true, FSGroup: true}},
		{init: `{"status":"Not supported"}`, want: flexCapabilities{Attach: true, SELinuxRelabel: true, FSGroup: true}},
		{init: `{"status":"Success","capabilities":{"attach":false}}`, want: flexCapabilities{SELinuxRelabel: true, FSGroup: true}},
		{init: `{"status":"Success","capabilities":{"fsGroup":false,"selinuxRelabel":false}}`, want: flexCapabilities{Attach: true}},
	}
	for _, tc := range cases {
		t.Run(tc.init, func(t *testing.T) {
			dir := t.TempDir()
			writeFakeDriver(t, dir, `echo '`+tc.init+`'`)
			_, caps, err := (&flexRegistry{pluginDir: dir}).get(context.Background(), "test/fake")
			if err != nil {
				t.Fatal(err)
			}
			if caps != tc.want {
				t.Errorf("caps %+v, want %+v", caps, tc.want)
			}
		})
	}
	if _, caps, _ := (&flexRegistry{builtin: map[string]flexDriver{loopDriverName: loopDriver{}}}).get(context.Background(), loopDriverName); !caps.FSGroup {
		t.Error("peapod/loop does not take the fsGroup")
	}
}

// fsEntry is what one path of a volume should be: mode and group.
type fsEntry struct {
	mode os.FileMode
	gid  int64
}

// Every volume kind with and without fsGroup on real mounts, as the e2e
// specs look at them (fsGroup 123: "new files should be created with
// FSGroup ownership", "nonexistent volume subPath should have the correct
// mode and owner", "defaultMode and fsGroup set"); an update and a rotated
// token keep them; a restarted agent leaves the pod's files alone unless
// the root lost its group.
func TestIntegrationFSGroupVolumes(t *testing.T) {
	requireIntegration(t)
	d, sgid, sticky := os.ModeDir, os.ModeSetgid, os.ModeSticky
	fsg := int64(123)
	cases := []struct {
		name    string
		fsGroup *int64
		want    map[string]fsEntry // "<volume mount path>/<path>"
	}{
		{name: "fsGroup", fsGroup: &fsg, want: map[string]fsEntry{
			"/mem": {d | sgid | sticky | 0o777, 123}, "/disk": {d | sgid | 0o777, 123},
			"/sub": {d | sgid | sticky | 0o777, 123},
			"/cfg": {d | sgid | 0o777, 123}, "/cfg/..data/data-1": {0o440, 123},
			"/sec": {d | sgid | sticky | 0o777, 123}, "/sec/..data/data-1": {0o644, 123},
			"/info": {d | sgid | sticky | 0o777, 123}, "/info/..data/podname": {0o440, 123},
			"/proj/..data/token": {0o640, 123}, "/proj/..data/ca.crt": {0o644, 123},
			"/host": {d | 0o755, 0},
		}},
		{name: "no fsGroup", want: map[string]fsEntry{
			"/mem": {d | sticky | 0o777, 0}, "/disk": {d | 0o777, 0},
			"/sub": {d | sticky | 0o777, 0},
			"/cfg": {d | 0o777, 0}, "/cfg/..data/data-1": {0o440, 0},
			"/sec": {d | sticky | 0o777, 0}, "/sec/..data/data-1": {0o644, 0},
			"/info": {d | sticky | 0o777, 0}, "/info/..data/podname": {0o440, 0},
			"/proj/..data/token": {0o644, 0}, "/proj/..data/ca.crt": {0o644, 0},
			"/host": {d | 0o755, 0},
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tokens := &testTokens{token: "tok-1"}
			e.opts.Tokens = tokens
			m := e.manager(t)
			ctx := context.Background()
			host := filepath.Join(e.root, "host")
			if err := os.Mkdir(host, 0o755); err != nil {
				t.Fatal(err)
			}
			os.Chmod(host, 0o755)
			cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "ns"}, Data: map[string]string{"data-1": "value-1"}}
			ca := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: "ns"}, Data: map[string]string{"ca.crt": "CA"}}
			sec := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec", Namespace: "ns"}, Data: map[string][]byte{"data-1": []byte("value-1")}}
			objs := &Objects{ConfigMaps: map[string]*v1.ConfigMap{"ns/cfg": cm, "ns/kube-root-ca.crt": ca}, Secrets: map[string]*v1.Secret{"ns/sec": sec}}
			vols := []v1.Volume{
				{Name: "mem", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{Medium: v1.StorageMediumMemory}}},
				{Name: "disk", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
				{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, DefaultMode: i32(0o440)}}},
				{Name: "sec", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "sec"}}},
				{Name: "info", VolumeSource: v1.VolumeSource{DownwardAPI: &v1.DownwardAPIVolumeSource{DefaultMode: i32(0o440), Items: []v1.DownwardAPIVolumeFile{
					{Path: "podname", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
				{Name: "proj", VolumeSource: v1.VolumeSource{Projected: kubeAPIAccess(nil, "", nil)}},
				{Name: "host", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: host}}},
			}
			var vms []v1.VolumeMount
			for _, v := range vols {
				vms = append(vms, v1.VolumeMount{Name: v.Name, MountPath: "/" + v.Name})
			}
			vms = append(vms, v1.VolumeMount{Name: "mem", MountPath: "/sub", SubPath: "test-sub"})
			uid := "u-fsg-" + strconv.Itoa(i)
			pod := podWith(uid, "fsg", vols, v1.Container{Name: "c", VolumeMounts: vms})
			pod.Spec.SecurityContext = &v1.PodSecurityContext{FSGroup: tc.fsGroup}

			mounts, err := m.SetupPod(ctx, pod, objs)
			if err != nil {
				t.Fatal(err)
			}
			at := func(p string) string {
				mp, rest, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
				return filepath.Join(mountFor(t, mounts, "c", "/"+mp).HostPath, rest)
			}
			check := func(step string) {
				t.Helper()
				for p, w := range tc.want {
					mode, gid := modeGid(t, at(p))
					if mode != w.mode || gid != w.gid {
						t.Errorf("%s: %s: %v gid %d, want %v gid %d", step, p, mode, gid, w.mode, w.gid)
					}
				}
			}
			check("setup")
			for _, v := range []string{"mem", "info", "sec", "proj"} {
				if ms, _ := mountsAt(at("/" + v)); len(ms) != 1 || ms[0].FSType != "tmpfs" {
					t.Errorf("%s not on tmpfs: %+v", v, ms)
				}
			}
			for _, vm := range vms {
				want := map[string]bool{"cfg": true, "sec": true, "info": true, "proj": true}[vm.Name]
				if got := mountFor(t, mounts, "c", vm.MountPath).Readonly; got != want {
					t.Errorf("%s read-only %v, want %v", vm.MountPath, got, want)
				}
			}
			// A file the container makes in an emptyDir (here as root, umask 0)
			// is the fsGroup's.
			newFile := filepath.Join(at("/mem"), "test-file")
			if err := os.WriteFile(newFile, []byte("x"), 0o660); err != nil {
				t.Fatal(err)
			}
			if _, g := modeGid(t, newFile); g != tc.want["/mem"].gid {
				t.Errorf("new file in the emptyDir: gid %d, want %d", g, tc.want["/mem"].gid)
			}

			// Re-projection: an update and a rotated token.
			cm2, sec2 := cm.DeepCopy(), sec.DeepCopy()
			cm2.Data["data-1"], sec2.Data["data-1"] = "value-2", []byte("value-2")
			tokens.set("tok-2")
			m.UpdateObjects(&Objects{ConfigMaps: map[string]*v1.ConfigMap{"ns/cfg": cm2, "ns/kube-root-ca.crt": ca}, Secrets: map[string]*v1.Secret{"ns/sec": sec2}})
			for p, v := range map[string]string{"/cfg/data-1": "value-2", "/sec/data-1": "value-2", "/proj/token": "tok-2"} {
				if got := mustRead(t, at(p)); got != v {
					t.Errorf("after update %s = %q, want %q", p, got, v)
				}
			}
			check("update")

			// The agent restarts: the pod's own file, of another group and
			// 0600, is left as it is while the emptyDir's root matches...
			mine := filepath.Join(at("/disk"), "mine")
			if err := os.WriteFile(mine, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			os.Chmod(mine, 0o600)
			os.Chown(mine, 0, 0)
			dataBefore := map[string]string{}
			for _, v := range []string{"/cfg", "/sec", "/info", "/proj"} {
				dataBefore[v] = readLink(t, filepath.Join(at(v), dataDirName))
			}
			restart := func() {
				t.Helper()
				o := e.opts
				o.Registerer = nil
				m2, err := New(o)
				if err != nil {
					t.Fatal(err)
				}
				m = m2
				if mounts, err = m.SetupPod(ctx, pod, objs); err != nil {
					t.Fatal(err)
				}
			}
			objs = &Objects{ConfigMaps: map[string]*v1.ConfigMap{"ns/cfg": cm2, "ns/kube-root-ca.crt": ca}, Secrets: map[string]*v1.Secret{"ns/sec": sec2}}
			restart()
			check("restart")
			wantModeGid(t, mine, 0o600, 0)
			for v, before := range dataBefore { // their modes as fsGroup left them are no change
				if got := readLink(t, filepath.Join(at(v), dataDirName)); got != before {
					t.Errorf("restart rewrote the unchanged %s (%s → %s)", v, before, got)
				}
			}
			if tc.fsGroup != nil {
				// ...and walked when it does not (its setgid gone).
				os.Chmod(at("/disk"), 0o777)
				restart()
				wantModeGid(t, mine, 0o660, fsg)
				wantModeGid(t, at("/disk"), d|sgid|0o777, fsg)
			}

			if err := m.TeardownPod(ctx, pod); err != nil {
				t.Fatal(err)
			}
			if ms, _ := mountsBeneath(e.root); len(ms) != 0 {
				t.Fatalf("mounts left: %v", ms)
			}
		})
	}
}

// PVC-backed volumes: a local PV takes the fsGroup on its first pod mount
// only, per fsGroupChangePolicy, never when read-only; peapod/loop's ext4
// takes it on mount, and a subPath made in it is the fsGroup's too.
func TestIntegrationFSGroupPersistentVolumes(t *testing.T) {
	requireIntegration(t)
	e := newEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	d, sgid := os.ModeDir, os.ModeSetgid
	local := filepath.Join(e.root, "local-pv")
	f := filepath.Join(local, "f")
	if err := os.Mkdir(local, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(local, 0o755)
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	objs := &Objects{
		PersistentVolumes: []*v1.PersistentVolume{{ObjectMeta: metav1.ObjectMeta{Name: "pv-local"}, Spec: v1.PersistentVolumeSpec{
			PersistentVolumeSource: v1.PersistentVolumeSource{Local: &v1.LocalVolumeSource{Path: local}}}}},
		PersistentVolumeClaims: map[string]*v1.PersistentVolumeClaim{"ns/local": {ObjectMeta: metav1.ObjectMeta{Name: "local", Namespace: "ns"},
			Spec: v1.PersistentVolumeClaimSpec{VolumeName: "pv-local"}}},
	}
	onRoot := v1.FSGroupChangeOnRootMismatch
	steps := []struct {
		name     string
		fsGroup  int64
		policy   *v1.PodFSGroupChangePolicy
		readOnly bool
		keep     bool   // leave the pod running for the next step
		prep     func() // before the pod starts
		root, f  fsEntry
	}{
		{name: "first pod: the tree takes fsGroup 123", fsGroup: 123, keep: true,
			root: fsEntry{d | sgid | 0o775, 123}, f: fsEntry{0o660, 123}},
		{name: "a second pod while the first has it: left as it is", fsGroup: 456,
			root: fsEntry{d | sgid | 0o775, 123}, f: fsEntry{0o660, 123}},
		{name: "OnRootMismatch, the root matches: not walked", fsGroup: 123, policy: &onRoot,
			prep: func() { os.Chown(f, 0, 0); os.Chmod(f, 0o600) },
			root: fsEntry{d | sgid | 0o775, 123}, f: fsEntry{0o600, 0}},
		{name: "OnRootMismatch, another group: walked", fsGroup: 456, policy: &onRoot,
			root: fsEntry{d | sgid | 0o775, 456}, f: fsEntry{0o660, 456}},
		{name: "Always: walked", fsGroup: 123,
			prep: func() { os.Chown(f, 0, 0); os.Chmod(f, 0o600) },
			root: fsEntry{d | sgid | 0o775, 123}, f: fsEntry{0o660, 123}},
		{name: "read-only claim: left as it is", fsGroup: 789, readOnly: true,
			prep: func() { os.Chown(f, 0, 0); os.Chmod(f, 0o600) },
			root: fsEntry{d | sgid | 0o775, 123}, f: fsEntry{0o600, 0}},
	}
	var kept *v1.Pod
	for i, st := range steps {
		if st.prep != nil {
			st.prep()
		}
		g := st.fsGroup
		pod := podWith("u-local-"+strconv.Itoa(i), "local", []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
			PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "local", ReadOnly: st.readOnly}}}},
			v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}}})
		pod.Spec.SecurityContext = &v1.PodSecurityContext{FSGroup: &g, FSGroupChangePolicy: st.policy}
		mounts, err := m.SetupPod(ctx, pod, objs)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		dir := mountFor(t, mounts, "c", "/data").HostPath
		for p, w := range map[string]fsEntry{dir: st.root, filepath.Join(dir, "f"): st.f} {
			if mode, gid := modeGid(t, p); mode != w.mode || gid != w.gid {
				t.Errorf("%s: %s: %v gid %d, want %v gid %d", st.name, p, mode, gid, w.mode, w.gid)
			}
		}
		for _, p := range []*v1.Pod{kept, pod} {
			if p != nil && !(p == pod && st.keep) {
				if err := m.TeardownPod(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
		}
		kept = nil
		if st.keep {
			kept = pod
		}
	}

	image := e.image(t, 64<<20)
	loop := claimPod("u-loop")
	loop.Spec.SecurityContext = &v1.PodSecurityContext{FSGroup: i64(123)}
	mounts, err := m.SetupPod(ctx, loop, loopObjs(image))
	if err != nil {
		t.Fatal(err)
	}
	data := mountFor(t, mounts, "db", "/data").HostPath
	wantModeGid(t, data, d|sgid|0o775, 123)
	wantModeGid(t, filepath.Join(data, "lost+found"), d|sgid|0o770, 123)
	wantModeGid(t, filepath.Join(data, "logs/x"), d|sgid|0o775, 123) // the subPath, made after
	if err := m.TeardownPod(ctx, loop); err != nil {
		t.Fatal(err)
	}
	if ms, _ := mountsBeneath(e.root); len(ms) != 0 {
		t.Fatalf("mounts left: %v", ms)
	}
}
