package image

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"
)

// TestResolveSubPath: image_sub_path resolves inside the image as the
// image's own processes would see it; nothing resolves to the host.
func TestResolveSubPath(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	// A sibling of the rootfs: what a symlink escaping the image would reach.
	outside := filepath.Join(dir, "outside", "secret")
	for _, d := range []string{filepath.Join(root, "etc"), filepath.Join(root, "data", "dir"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(root, "etc", "passwd"), filepath.Join(outside, "key")} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"abs":       "/etc",                       // absolute: the image's /etc
		"absfile":   "/etc/passwd",                // absolute, to a file
		"esc":       "../../../../../../etc",      // relative, climbing past the root
		"out":       "../outside/secret",          // relative, to the host sibling
		"absout":    filepath.Join(outside),       // absolute host path of the sibling
		"data/up":   "../../../outside/secret",    // escaping from a subdirectory
		"loop":      "loop",                       // ELOOP
		"dangling":  "/nowhere",                   // missing target
		"data/self": ".",                          // a harmless relative link
		"proc":      "/proc/self/root/etc/passwd", // a magic link on the host, a plain path inside
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := func(p string) string { return filepath.Join(root, p) }
	tests := []struct {
		sub, want string // want "" = refused with ErrBadSubPath
	}{
		{"", root},
		{"etc", in("etc")},
		{"./etc/", in("etc")},
		{"data/dir", in("data/dir")},
		{"etc/passwd", in("etc/passwd")},
		{"data/self/dir", in("data/dir")},
		{"abs", in("etc")},
		{"abs/passwd", in("etc/passwd")},
		{"absfile", in("etc/passwd")},
		{"esc", in("etc")},
		{"..", ""},
		{"../root/etc", ""},
		{"data/../../outside", ""},
		{"data/..", ""},
		{"/etc", ""},
		{"/", ""},
		{"out", ""},    // clamped to <root>/outside/secret: not in the image
		{"absout", ""}, // the host path, taken inside the image: not there
		{"data/up", ""},
		{"missing", ""},
		{"dangling", ""},
		{"etc/passwd/x", ""}, // ENOTDIR
		{"loop", ""},         // ELOOP
		{"fifo", ""},         // neither a directory nor a file
		{"proc", ""},         // no /proc in the image
		{"a\x00b", ""},
		{strings.Repeat("a/", 3000), ""}, // ENAMETOOLONG
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.sub, "/", "|"), func(t *testing.T) {
			got, err := ResolveSubPath(root, tt.sub)
			if tt.want == "" {
				if !errors.Is(err, ErrBadSubPath) {
					t.Fatalf("ResolveSubPath(%q) = %q, %v; want ErrBadSubPath", tt.sub, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ResolveSubPath(%q) = %q, %v; want %q", tt.sub, got, err, tt.want)
			}
		})
	}
}

func mountCount(t *testing.T, p string) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			n++
		}
	}
	return n
}

func needMounts(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount overlays")
	}
}

// TestImageVolumes: one read-only overlay per image, shared, refcounted by
// holders; RemoveImage refused while mounted; kept over a restart, made
// again after a reboot, dropped with its container.
func TestImageVolumes(t *testing.T) {
	needMounts(t)
	e := newEnv(t)
	hello := tent{hdr: tar.Header{Name: "data/hello.txt"}, body: "hello\n"}
	e.reg.push(t, "two:1", imageOf(t,
		tarLayer(t, []tent{{hdr: tar.Header{Name: "data/", Typeflag: tar.TypeDir}}, {hdr: tar.Header{Name: "data/old.txt"}, body: "old"}}),
		tarLayer(t, []tent{hello, {hdr: tar.Header{Name: "data/.wh.old.txt"}}})))
	e.reg.push(t, "one:1", imageOf(t, tarLayer(t, []tent{hello})))
	cfgOnly, err := mutate.Config(empty.Image, v1.Config{Cmd: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	e.reg.push(t, "none:1", cfgOnly)
	two, one, none := e.pull(e.reg.host+"/two:1"), e.pull(e.reg.host+"/one:1"), e.pull(e.reg.host+"/none:1")
	ctx := ctxT(t)
	t.Cleanup(func() {
		for _, c := range []string{"c1", "c2", "c3", "c4", "c5"} {
			e.svc.ReleaseVolumes(ctx, c)
		}
	})

	v1a, err := e.svc.MountVolume(ctx, "c1", e.reg.host+"/two:1")
	if err != nil {
		t.Fatal(err)
	}
	v1b, err := e.svc.MountVolume(ctx, "c2", two.ID)
	if err != nil {
		t.Fatal(err)
	}
	if v1a.Root != v1b.Root || v1a.ImageID != two.ID || mountCount(t, v1a.Root) != 1 {
		t.Fatalf("volumes %+v %+v, %d mounts: want one shared mount", v1a, v1b, mountCount(t, v1a.Root))
	}
	if b, err := os.ReadFile(filepath.Join(v1a.Root, "data/hello.txt")); err != nil || string(b) != "hello\n" {
		t.Errorf("hello.txt = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(v1a.Root, "data/old.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whited-out file visible: %v", err)
	}
	if err := os.WriteFile(filepath.Join(v1a.Root, "data/new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write into the volume: %v, want EROFS", err)
	}
	// One layer (overlay needs a second, empty lower) and no layer at all.
	for _, img := range []*Image{one, none} {
		v, err := e.svc.MountVolume(ctx, "c3", img.ID)
		if err != nil {
			t.Fatalf("mount %d-layer image: %v", len(img.ChainIDs), err)
		}
		if ok, _ := isMountRoot(v.Root); !ok {
			t.Errorf("%d-layer image volume not mounted", len(img.ChainIDs))
		}
		if err := os.WriteFile(filepath.Join(v.Root, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
			t.Errorf("write into the %d-layer volume: %v, want EROFS", len(img.ChainIDs), err)
		}
	}
	if _, err := os.Stat(filepath.Join(e.svc.volumePath(one.ID), "data/hello.txt")); err != nil {
		t.Errorf("one-layer volume: %v", err)
	}
	if n := dirNames(t, e.svc.emptyDir()); len(n) != 0 {
		t.Errorf("the empty lower holds %v", n)
	}
	if _, err := e.svc.MountVolume(ctx, "c4", "nope:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("MountVolume of an absent image: %v, want ErrNotFound", err)
	}

	err = e.svc.Remove(ctx, e.reg.host+"/two:1")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "c1, c2") {
		t.Fatalf("Remove of a mounted image: %v, want ErrInUse naming c1, c2", err)
	}
	if err := e.svc.ReleaseVolumes(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := isMountRoot(v1a.Root); !ok || !slices.Equal(e.svc.VolumeUsers(two.ID), []string{"c2"}) {
		t.Fatalf("after c1 left: mounted %v, users %v", ok, e.svc.VolumeUsers(two.ID))
	}

	// Rootfs holds: c2's, and c5's, a container killed inside
	// CreateContainer after it acquired its image, before its record.
	for _, c := range []string{"c2", "c5"} {
		if _, _, err := e.svc.Acquire(ctx, c, two.ID); err != nil {
			t.Fatal(err)
		}
	}

	// peapod killed: a new Service finds the holders; c2 still exists,
	// c3 and c5 do not (killed inside CreateContainer).
	e.reopen()
	if err := e.svc.ReconcileVolumes(ctx, func(c string) bool { return c == "c2" }); err != nil {
		t.Fatal(err)
	}
	if _, kept := e.svc.holders["c2"]; !kept {
		t.Errorf("rootfs hold of an existing container dropped")
	}
	if _, kept := e.svc.holders["c5"]; kept {
		t.Errorf("rootfs hold of a container that does not exist kept")
	}
	var stored []string
	e.svc.o.Store.ForEach(BucketHolders, func(k string, _ []byte) error { stored = append(stored, k); return nil })
	if slices.Contains(stored, "c5") {
		t.Errorf("rootfs hold of a container that does not exist still in the store: %v", stored)
	}
	if ok, _ := isMountRoot(v1a.Root); !ok || mountCount(t, v1a.Root) != 1 {
		t.Errorf("c2's volume after restart: mounted %v, %d mounts", ok, mountCount(t, v1a.Root))
	}
	for _, img := range []*Image{one, none} {
		if _, err := os.Stat(e.svc.volumePath(img.ID)); !errors.Is(err, os.ErrNotExist) || len(e.svc.VolumeUsers(img.ID)) != 0 {
			t.Errorf("volume of a container that does not exist kept: %v %v", err, e.svc.VolumeUsers(img.ID))
		}
	}
	// A reboot: the mount is gone, the holder is not.
	if err := unix.Unmount(v1a.Root, 0); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	if err := e.svc.ReconcileVolumes(ctx, func(c string) bool { return c == "c2" }); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(v1a.Root, "data/hello.txt")); err != nil || string(b) != "hello\n" {
		t.Errorf("volume not made again after a reboot: %q, %v", b, err)
	}

	if err := e.svc.ReleaseVolumes(ctx, "c2"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.ReleaseVolumes(ctx, "c2"); err != nil {
		t.Fatalf("ReleaseVolumes again: %v", err)
	}
	if _, err := os.Stat(v1a.Root); !errors.Is(err, os.ErrNotExist) || mountCount(t, v1a.Root) != 0 {
		t.Errorf("last user gone, volume still there: %v", err)
	}
	if err := e.svc.Release(ctx, "c2"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Remove(ctx, two.ID); err != nil {
		t.Errorf("Remove after the last user: %v", err)
	}
	if n := dirNames(t, e.svc.volumesDir()); len(n) != 0 {
		t.Errorf("volumes left: %v", n)
	}
}
