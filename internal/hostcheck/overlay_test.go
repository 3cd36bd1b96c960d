package hostcheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"peapod/hack/testenv"
)

// mount mounts fstype at a new dir under t's temp dir and unmounts it at
// cleanup.
func mount(t *testing.T, fstype string, flags uintptr, opts string, prepare func(dir string) string) string {
	t.Helper()
	base := t.TempDir()
	if prepare != nil {
		opts = prepare(base)
	}
	target := filepath.Join(base, "mnt")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fstype, target, fstype, flags, opts); err != nil {
		t.Fatalf("mount %s at %s: %v", fstype, target, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(target, 0); err != nil {
			t.Errorf("unmount %s: %v", target, err)
			_ = unix.Unmount(target, unix.MNT_DETACH)
		}
	})
	return target
}

// overlayMount is an overlayfs mount (lower, upper and work on t's temp
// dir), the root dir of a peapod run inside a container whose own root
// is an overlay.
func overlayMount(t *testing.T) string {
	return mount(t, "overlay", 0, "", func(base string) string {
		for _, d := range []string{"l", "u", "w"} {
			if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return "lowerdir=" + filepath.Join(base, "l") + ",upperdir=" + filepath.Join(base, "u") + ",workdir=" + filepath.Join(base, "w")
	})
}

// The overlay test mounts a real overlay under the root dir: it passes on
// ext4 and tmpfs, and fails naming the filesystem and the fix where
// overlayfs cannot put upper dirs (on an overlay) or the root dir cannot
// be written. It leaves no scratch dir and no mount behind.
func TestOverlay(t *testing.T) {
	testenv.Integration(t)
	tests := []struct {
		name    string
		root    func(t *testing.T) string
		wantErr []string
	}{
		{name: "ext4 (this machine's /tmp)", root: func(t *testing.T) string { return t.TempDir() }},
		{name: "tmpfs", root: func(t *testing.T) string { return mount(t, "tmpfs", 0, "size=4m", nil) }},
		{
			name: "overlay on overlay",
			root: func(t *testing.T) string {
				root := filepath.Join(overlayMount(t), "var", "lib", "peapod")
				if err := os.MkdirAll(root, 0o755); err != nil {
					t.Fatal(err)
				}
				return root
			},
			wantErr: []string{"is on overlayfs, which overlayfs cannot use for upper dirs", "mount: invalid argument", "no container could get its root filesystem", "set root in peapod.toml"},
		},
		{
			name:    "read-only",
			root:    func(t *testing.T) string { return mount(t, "tmpfs", unix.MS_RDONLY, "size=1m", nil) },
			wantErr: []string{"cannot test overlayfs in", "on a read-only filesystem", "remount it read-write"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := tt.root(t)
			err := Overlay(root)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Overlay(%s) = %v, want ok", root, err)
				}
			} else {
				if err == nil {
					t.Fatalf("Overlay(%s) passed, want an error", root)
				}
				t.Logf("Overlay: %v", err)
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
			}
			if left, _ := filepath.Glob(filepath.Join(root, overlayCheckPrefix+"*")); len(left) > 0 {
				t.Errorf("scratch dirs left: %v", left)
			}
			if mounts, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(mounts), overlayCheckPrefix) {
				t.Errorf("an overlay check mount is left:\n%s", mounts)
			}
		})
	}
}

// A root dir that does not exist yet is tested where serve will create
// it: its nearest existing parent.
func TestOverlayResultMissingRoot(t *testing.T) {
	testenv.Integration(t)
	parent := t.TempDir()
	r := OverlayResult(filepath.Join(parent, "var", "lib", "peapod"))
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if want := "(not there yet: tested at " + parent + ")"; !strings.Contains(r.What, want) {
		t.Errorf("What = %q, want it to say %q", r.What, want)
	}
	if _, err := os.Stat(filepath.Join(parent, "var")); err == nil {
		t.Errorf("the check created the missing root's parents")
	}
}

// A check killed mid-way leaves its scratch dir with the overlay still
// mounted; the next check removes it (and only those of dead processes).
func TestOverlaySweepsStaleChecks(t *testing.T) {
	testenv.Integration(t)
	root := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(root, overlayCheckPrefix+strconv.Itoa(dead.Process.Pid)+"-123")
	live := filepath.Join(root, overlayCheckPrefix+"1-456") // pid 1 runs
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		for _, base := range []string{stale, live} {
			if err := os.MkdirAll(filepath.Join(base, d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	merged := filepath.Join(stale, "merged")
	opts := "lowerdir=" + filepath.Join(stale, "lower") + ",upperdir=" + filepath.Join(stale, "upper") + ",workdir=" + filepath.Join(stale, "work")
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(merged, unix.MNT_DETACH) })
	if err := Overlay(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale check dir %s still there (%v)", stale, err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the check dir of a live process was removed: %v", err)
	}
}

// This machine's filesystems fill in d_type.
func TestHasDType(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ok, err := hasDType(dir)
	if err != nil || !ok {
		t.Fatalf("hasDType(%s) = %v, %v; want true", dir, ok, err)
	}
	if _, err := hasDType(t.TempDir()); err == nil {
		t.Errorf("hasDType of an empty dir: want an error")
	}
}
