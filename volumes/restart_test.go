package volumes

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestPlanOrphans(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		entries              map[types.UID]entryPhase
		dirs                 []types.UID
		keep                 []types.UID
		wantClaim, wantGoing []types.UID
	}{
		{name: "nothing"},
		{name: "held and wanted: claimed as it is",
			entries: map[types.UID]entryPhase{"a": phaseHeld}, dirs: []types.UID{"a"}, keep: []types.UID{"a"},
			wantClaim: []types.UID{"a"}},
		{name: "held and not wanted: released",
			entries: map[types.UID]entryPhase{"a": phaseHeld}, dirs: []types.UID{"a"},
			wantGoing: []types.UID{"a"}},
		{name: "held without a pod dir, not wanted: released (devices)",
			entries:   map[types.UID]entryPhase{"a": phaseHeld},
			wantGoing: []types.UID{"a"}},
		{name: "set up since the restart: the agent's, even if not in keep",
			entries: map[types.UID]entryPhase{"a": phaseActive}, dirs: []types.UID{"a"}},
		{name: "terminating: its teardown's",
			entries: map[types.UID]entryPhase{"a": phaseTerminating}, dirs: []types.UID{"a"}},
		{name: "pod dir without a record, not wanted: released",
			dirs: []types.UID{"x"}, wantGoing: []types.UID{"x"}},
		{name: "pod dir without a record, wanted: left for its SetupPod",
			dirs: []types.UID{"x"}, keep: []types.UID{"x"}},
		{name: "mixed",
			entries: map[types.UID]entryPhase{"b": phaseHeld, "a": phaseHeld, "c": phaseActive, "d": phaseHeld},
			dirs:    []types.UID{"a", "b", "c", "e", "f"}, keep: []types.UID{"b", "f"},
			wantClaim: []types.UID{"b"}, wantGoing: []types.UID{"a", "d", "e"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keep := map[types.UID]bool{}
			for _, u := range tc.keep {
				keep[u] = true
			}
			p := planOrphans(tc.entries, tc.dirs, keep)
			if !slices.Equal(p.claim, tc.wantClaim) || !slices.Equal(p.release, tc.wantGoing) {
				t.Fatalf("claim %v release %v, want claim %v release %v", p.claim, p.release, tc.wantClaim, tc.wantGoing)
			}
		})
	}
}

func TestClassifyLoops(t *testing.T) {
	want := &unix.Stat_t{Ino: 12, Dev: 2049}
	loop := func(n uint32, ino, dev uint64, deleted bool) loopInfo {
		return loopInfo{Device: "/dev/loop" + string(rune('0'+n)), Major: 7, Minor: n, BackingFile: "/img", Inode: ino, Dev: dev, Deleted: deleted}
	}
	for _, tc := range []struct {
		name      string
		cands     []loopInfo
		want      *unix.Stat_t
		global    devNum
		good      string
		wantStale []string
	}{
		{name: "none", want: want},
		{name: "the same file", cands: []loopInfo{loop(0, 12, 2049, false)}, want: want, good: "/dev/loop0"},
		{name: "replaced at the same path: another inode", cands: []loopInfo{loop(0, 99, 2049, true)}, want: want, wantStale: []string{"/dev/loop0"}},
		{name: "same inode number on another filesystem", cands: []loopInfo{loop(0, 12, 2050, false)}, want: want, wantStale: []string{"/dev/loop0"}},
		{name: "deleted is never the named file", cands: []loopInfo{loop(0, 12, 2049, true)}, want: want, wantStale: []string{"/dev/loop0"}},
		{name: "old and new side by side", cands: []loopInfo{loop(0, 99, 2049, true), loop(1, 12, 2049, false)}, want: want,
			good: "/dev/loop1", wantStale: []string{"/dev/loop0"}},
		{name: "two on the file: the one at the global path", cands: []loopInfo{loop(0, 12, 2049, false), loop(1, 12, 2049, false)}, want: want,
			global: devNum{7, 1}, good: "/dev/loop1"},
		{name: "named file not there: nothing is good", cands: []loopInfo{loop(0, 12, 2049, false)},
			wantStale: []string{"/dev/loop0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := classifyLoops(tc.cands, tc.want, tc.global)
			good := ""
			if v.good != nil {
				good = v.good.Device
			}
			var stale []string
			for _, li := range v.stale {
				stale = append(stale, li.Device)
			}
			if good != tc.good || !slices.Equal(stale, tc.wantStale) {
				t.Fatalf("good %q stale %v, want %q %v", good, stale, tc.good, tc.wantStale)
			}
		})
	}
}

func TestGlobalMountsToRelease(t *testing.T) {
	mi := func(p string) mountInfo { return mountInfo{MountPoint: p, Major: 7, Minor: 3} }
	mounts := []mountInfo{
		mi("/"),
		mi("/g/peapod~loop/pv-kept"),
		mi("/g/peapod~loop/pv-gone"),
		mi("/g/peapod~loop/pv-kept/inner"),
		mi("/g/example.com~ldisk/inline-abc"),
		mi("/g/kubernetes.io~local-volume/pv-local"),
		mi("/g/kubernetes.io/csi/drv/abc/globalmount"), // the CSI code's
		mi("/g/kubernetes.io~csi/x"),
		mi("/g/peapod~loop"), // the plugin dir itself: not a device mount
		mi("/other/peapod~loop/pv"),
		mi("/g/peapod~loop/pv-gone/deeper/still"),
	}
	got := globalMountsToRelease(mounts, "/g/", map[string]bool{"/g/peapod~loop/pv-kept": true})
	var paths []string
	for _, m := range got {
		paths = append(paths, m.MountPoint)
	}
	want := []string{"/g/peapod~loop/pv-gone/deeper/still", "/g/peapod~loop/pv-gone", "/g/example.com~ldisk/inline-abc", "/g/kubernetes.io~local-volume/pv-local"}
	if !slices.Equal(paths, want) {
		t.Fatalf("got %v\nwant %v", paths, want)
	}
}

func TestSameVolumeSourceAndLoopImageChanged(t *testing.T) {
	flex := func(image string) *volumeSpec {
		return &volumeSpec{Name: "data", Kind: kindFlex, DirName: "peapod~loop", SpecName: "pv", PVName: "pv", Claim: "ns/c",
			Device: "flex:peapod/loop:pv", GlobalPath: "/g/peapod~loop/pv",
			Flex: &v1.FlexPersistentVolumeSource{Driver: loopDriverName, FSType: "ext4", Options: map[string]string{"image": image}}}
	}
	ro := flex("/a.img")
	ro.ReadOnly = true
	otherPV := flex("/a.img")
	otherPV.SpecName, otherPV.PVName, otherPV.Device = "pv2", "pv2", "flex:peapod/loop:pv2"
	for _, tc := range []struct {
		name         string
		a, b         *volumeSpec
		same         bool
		imageChanged bool
	}{
		{"same", flex("/a.img"), flex("/a.img"), true, false},
		{"PV names another image", flex("/a.img"), flex("/b.img"), false, true},
		{"read-only now", flex("/a.img"), ro, false, false},
		{"another PV", flex("/a.img"), otherPV, false, false},
		{"emptyDir", &volumeSpec{Name: "e", Kind: kindEmptyDir, DirName: "kubernetes.io~empty-dir", SpecName: "e"},
			&volumeSpec{Name: "e", Kind: kindEmptyDir, DirName: "kubernetes.io~empty-dir", SpecName: "e"}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sameVolumeSource(tc.a, tc.b); got != tc.same {
				t.Errorf("sameVolumeSource = %v, want %v", got, tc.same)
			}
			d := &deviceState{deviceRecord: deviceRecord{Key: tc.a.Device, Kind: tc.a.Kind}}
			if tc.a.Flex != nil {
				d.Driver, d.Options = tc.a.Flex.Driver, tc.a.Flex.Options
			}
			if got := loopImageChanged(d, tc.b); got != tc.imageChanged {
				t.Errorf("loopImageChanged = %v, want %v", got, tc.imageChanged)
			}
		})
	}
}

// After a restart, pods from the records are held: the reconciler sets
// nothing up for them until ReleaseOrphans (or SetupPod) claims them;
// ReleaseOrphans tears down the ones not kept, pod dirs without a record
// too, and keeps the wanted ones as they are. Needs no root (hostPath and
// an emptyDir on disk).
func TestReleaseOrphansAfterRestart(t *testing.T) {
	root := t.TempDir()
	opts := Options{PodsDir: filepath.Join(root, "pods"), GlobalMountDir: filepath.Join(root, "g"), StateDir: filepath.Join(root, "s")}
	host := filepath.Join(root, "host")
	os.Mkdir(host, 0o755)
	mk := func(uid string) *v1.Pod {
		return podWith(uid, "p-"+uid, []v1.Volume{
			{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
			{Name: "h", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: host}}},
		}, v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "scratch", MountPath: "/s"}, {Name: "h", MountPath: "/h"}}})
	}
	kept, gone := mk("u-kept"), mk("u-gone")
	ctx := context.Background()
	m1, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*v1.Pod{kept, gone} {
		if _, err := m1.SetupPod(ctx, p, nil); err != nil {
			t.Fatal(err)
		}
	}
	scratch := func(uid string) string {
		return filepath.Join(opts.PodsDir, uid, "volumes/kubernetes.io~empty-dir/scratch")
	}
	if err := os.WriteFile(filepath.Join(scratch("u-kept"), "data"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A pod dir whose record is lost.
	stray := filepath.Join(opts.PodsDir, "u-stray", "volumes", "kubernetes.io~empty-dir", "x")
	if err := os.MkdirAll(stray, 0o755); err != nil {
		t.Fatal(err)
	}

	// The agent stops; a new Manager on the same dirs.
	opts.Registerer = prometheus.NewRegistry()
	m2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []types.UID{"u-kept", "u-gone"} {
		if pe := m2.pods[uid]; pe == nil || !pe.held {
			t.Fatalf("pod %s not held after the restart: %+v", uid, pe)
		}
	}
	// The reconciler sets nothing up for held pods.
	os.RemoveAll(scratch("u-gone"))
	m2.mu.Lock()
	m2.reconcileLocked(ctx)
	m2.mu.Unlock()
	if _, err := os.Stat(scratch("u-gone")); !os.IsNotExist(err) {
		t.Fatalf("held pod's volume set up again: %v", err)
	}

	if err := m2.ReleaseOrphans(ctx, map[types.UID]bool{"u-kept": true}); err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"u-gone", "u-stray"} {
		if _, err := os.Stat(filepath.Join(opts.PodsDir, uid)); !os.IsNotExist(err) {
			t.Errorf("pod dir of %s left: %v", uid, err)
		}
		if _, err := os.Stat(m2.podRecordPath(uid)); !os.IsNotExist(err) {
			t.Errorf("record of %s left: %v", uid, err)
		}
	}
	if got := m2.PodUIDs(); !slices.Equal(got, []types.UID{"u-kept"}) {
		t.Fatalf("pods after release: %v", got)
	}
	if pe := m2.pods["u-kept"]; pe.held || pe.terminating {
		t.Fatalf("kept pod held %v terminating %v", pe.held, pe.terminating)
	}
	if b, err := os.ReadFile(filepath.Join(scratch("u-kept"), "data")); err != nil || string(b) != "kept" {
		t.Fatalf("kept pod's data: %q %v", b, err)
	}
	// Idempotent, and a later call leaves the pod the agent now owns.
	if err := m2.ReleaseOrphans(ctx, map[types.UID]bool{}); err != nil {
		t.Fatal(err)
	}
	if got := m2.PodUIDs(); !slices.Equal(got, []types.UID{"u-kept"}) {
		t.Fatalf("claimed pod released by a later sweep: %v", got)
	}
	mounts, err := m2.SetupPod(ctx, kept, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := mountFor(t, mounts, "c", "/s").HostPath; got != scratch("u-kept") {
		t.Fatalf("scratch at %s", got)
	}
	if err := m2.TeardownPod(ctx, kept); err != nil {
		t.Fatal(err)
	}
}
