package volumes

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"

	"peapod/volumes/disk"
)

// imageWithMarker makes an ext4 disk image at path holding the file marker
// with content s.
func imageWithMarker(t *testing.T, path, s string) {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "marker"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 -d: %v %s", err, out)
	}
}

// loopsHolding lists the attached loop devices whose backing file is at
// path, deleted or not.
func loopsHolding(t *testing.T, path string) []loopInfo {
	t.Helper()
	all, err := disk.LoopDevices()
	if err != nil {
		t.Fatal(err)
	}
	var out []loopInfo
	for _, li := range all {
		if li.BackingFile == path {
			out = append(out, li)
		}
	}
	return out
}

func stillAttached(li loopInfo) bool {
	now, err := disk.LoopStatus(li.Device)
	return err == nil && now.Inode == li.Inode && now.Dev == li.Dev
}

func mountID(t *testing.T, path string) int {
	t.Helper()
	ms, err := mountsAt(path)
	if err != nil || len(ms) != 1 {
		t.Fatalf("mounts at %s: %+v %v, want one", path, ms, err)
	}
	return ms[0].ID
}

// The report of issue 17: a pod's loop PVC was attached and mounted, the
// agent stopped (nothing released), the disk image was replaced at the same
// path (or the PV changed to name another image). The next agent must
// release everything when no pod wants the volume, must mount the file the
// PV names now when the pod (same UID) still wants it, and must leave a
// wanted, unchanged volume exactly as it is.
func TestIntegrationRestartOrphanedAndStaleLoopVolumes(t *testing.T) {
	requireIntegration(t)
	for _, tc := range []struct {
		name string
		// change: "" leaves the image alone; "replace" puts a new file
		// at the image's path; "repoint" makes the PV name another image.
		change     string
		wanted     bool
		setupFirst bool // SetupPod before ReleaseOrphans (a worker quicker than the housekeeping)
		// holdOpen keeps the old loop device open, as a container that
		// still has the old disk mounted in its own namespace does.
		holdOpen bool
		// lostRecords: StateDir's records are gone; only the disk and
		// the kernel tell what is there.
		lostRecords bool
	}{
		{name: "no pod wants it, image replaced", change: "replace"},
		{name: "no pod wants it", change: ""},
		{name: "no pod wants it, records lost", change: "", lostRecords: true},
		{name: "pod wants it, image replaced", change: "replace", wanted: true},
		{name: "pod wants it, image replaced, setup first", change: "replace", wanted: true, setupFirst: true},
		{name: "pod wants it, image replaced, old disk still in use", change: "replace", wanted: true, holdOpen: true},
		{name: "pod wants it, PV names another image", change: "repoint", wanted: true},
		{name: "pod wants it, unchanged: kept as it is", change: "", wanted: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			image := e.image(t, 64<<20)
			objs := loopObjs(image)
			pod := claimPod("u-stale")
			podVol := filepath.Join(e.opts.PodsDir, "u-stale/volumes/peapod~loop/pv-disk")
			subPath := filepath.Join(e.opts.PodsDir, "u-stale/volume-subpaths/data/db/1")
			global := filepath.Join(e.opts.GlobalMountDir, "peapod~loop/pv-disk")

			m1 := e.manager(t)
			mounts, err := m1.SetupPod(ctx, pod, objs)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(mountFor(t, mounts, "db", "/data").HostPath, "marker"), []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			olds := loopsHolding(t, image)
			if len(olds) != 1 {
				t.Fatalf("loop devices on the image: %+v", olds)
			}
			old := olds[0]
			// Once the image is replaced the old device is "(deleted)":
			// newEnv's clean-up by path would not find it.
			t.Cleanup(func() {
				if stillAttached(old) {
					ms, _ := mountsBeneath(e.root)
					for _, mp := range ms {
						unix.Unmount(mp, unix.MNT_DETACH)
					}
					if err := loopDetach(old.Device); err != nil {
						t.Logf("cleanup detach %s: %v", old.Device, err)
					}
				}
			})
			podVolID, globalID := mountID(t, podVol), mountID(t, global)

			// The agent stops: m1 is dropped, nothing is released.
			switch tc.change {
			case "replace":
				imageWithMarker(t, image+".new", "new")
				if err := os.Rename(image+".new", image); err != nil {
					t.Fatal(err)
				}
				if li, err := disk.LoopStatus(old.Device); err != nil || !li.Deleted {
					t.Fatalf("old device after the replacement: %+v %v, want its file deleted", li, err)
				}
			case "repoint":
				image2 := filepath.Join(e.root, "disk2.img")
				imageWithMarker(t, image2, "new")
				e.images = append(e.images, image2)
				objs = loopObjs(image2)
			}

			if tc.lostRecords {
				if err := os.RemoveAll(e.opts.StateDir); err != nil {
					t.Fatal(err)
				}
			}
			var held *os.File
			if tc.holdOpen {
				if held, err = os.Open(old.Device); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { held.Close() })
			}

			reg2 := prometheus.NewRegistry()
			o := e.opts
			o.Registerer = reg2
			m2, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			keep := map[types.UID]bool{}
			if tc.wanted {
				keep[pod.UID] = true
			}
			if tc.setupFirst {
				if mounts, err = m2.SetupPod(ctx, pod, objs); err != nil {
					t.Fatal(err)
				}
			}
			if err := m2.ReleaseOrphans(ctx, keep); err != nil {
				t.Fatal(err)
			}

			if !tc.wanted {
				if ms, _ := mountsBeneath(e.root); len(ms) != 0 {
					t.Fatalf("mounts left: %v", ms)
				}
				if stillAttached(old) {
					t.Fatalf("loop device %s still attached", old.Device)
				}
				if l := loopsHolding(t, image); len(l) != 0 {
					t.Fatalf("loop devices left on the image: %+v", l)
				}
				for _, p := range []string{filepath.Join(e.opts.PodsDir, "u-stale"), m2.podRecordPath("u-stale"), global} {
					if _, err := os.Stat(p); !os.IsNotExist(err) {
						t.Errorf("%s left: %v", p, err)
					}
				}
				if ents, _ := os.ReadDir(filepath.Join(e.opts.StateDir, "devices")); len(ents) != 0 {
					t.Errorf("device records left: %v", ents)
				}
				return
			}

			if tc.change == "" {
				// Claimed as it is: the same mounts (no remount), no attach.
				if id := mountID(t, podVol); id != podVolID {
					t.Fatalf("pod volume remounted by ReleaseOrphans (mount id %d → %d)", podVolID, id)
				}
			}
			if !tc.setupFirst {
				if mounts, err = m2.SetupPod(ctx, pod, objs); err != nil {
					t.Fatal(err)
				}
			}
			data := mountFor(t, mounts, "db", "/data").HostPath
			marker, err := os.ReadFile(filepath.Join(data, "marker"))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{podVol, global, subPath} {
				if n := mountCount(t, p); n != 1 {
					t.Fatalf("%d mounts at %s", n, p)
				}
			}
			// The device mounted at the global path holds the file the PV names.
			named := image
			if tc.change == "repoint" {
				named = objs.PersistentVolumes[0].Spec.FlexVolume.Options["image"]
			}
			var st unix.Stat_t
			if err := unix.Stat(named, &st); err != nil {
				t.Fatal(err)
			}
			gm, _ := mountsAt(global)
			li, err := disk.LoopStatus(disk.DeviceOf(gm[0]))
			if err != nil || !li.Backs(&st) {
				t.Fatalf("global path mounted from %+v (%v), want the file %s (inode %d)", li, err, named, st.Ino)
			}

			if tc.change == "" {
				if string(marker) != "old" {
					t.Fatalf("marker %q, want old", marker)
				}
				if mountID(t, podVol) != podVolID || mountID(t, global) != globalID || !stillAttached(old) || li.Device != old.Device {
					t.Fatal("an unchanged volume was remounted or reattached")
				}
				if got := counter(t, reg2, "peapod_volume_operations_total", map[string]string{"operation": "attach", "result": "success"}); got != 0 {
					t.Fatalf("attached %v times", got)
				}
			} else {
				if string(marker) != "new" {
					t.Fatalf("marker %q, want new: the pod got the stale disk", marker)
				}
				if tc.holdOpen {
					// Left to the kernel until its last user closes it.
					if li, err := disk.LoopStatus(old.Device); err != nil || !li.AutoClear {
						t.Fatalf("stale device in use: %+v %v, want it attached with autoclear", li, err)
					}
					held.Close()
					deadline := time.Now().Add(5 * time.Second)
					for stillAttached(old) && time.Now().Before(deadline) {
						time.Sleep(20 * time.Millisecond)
					}
				}
				if stillAttached(old) {
					t.Fatalf("stale loop device %s still attached", old.Device)
				}
				if got := counter(t, reg2, "peapod_volume_operations_total", map[string]string{"operation": "detach", "result": "success"}); got != 1 && !tc.holdOpen {
					t.Fatalf("detach count %v, want 1 (the stale device)", got)
				}
				// The subPath follows the new disk too.
				if err := os.WriteFile(filepath.Join(subPath, "f"), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(filepath.Join(data, "logs/x/f")); err != nil {
					t.Fatalf("subPath not on the new disk: %v", err)
				}
			}

			if err := m2.TeardownPod(ctx, pod); err != nil {
				t.Fatal(err)
			}
			if ms, _ := mountsBeneath(e.root); len(ms) != 0 {
				t.Fatalf("mounts left: %v", ms)
			}
			if l := loopsHolding(t, named); len(l) != 0 {
				t.Fatalf("still attached: %+v", l)
			}
		})
	}
}
