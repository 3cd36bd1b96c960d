package image

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// TestHostileLayers crafts layers that try to write outside the snapshot
// and checks each is refused or confined, and that nothing outside changed.
func TestHostileLayers(t *testing.T) {
	reg := func(name, body string) tent { return tent{hdr: tar.Header{Name: name}, body: body} }
	sym := func(name, target string) tent {
		return tent{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
	}
	hard := func(name, target string) tent {
		return tent{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
	}
	for _, tc := range []struct {
		name    string
		ents    func(outside string) []tent
		wantErr string            // "" = confined: must succeed
		inside  map[string]string // confined: files that must exist in the snapshot
	}{
		{name: "dotdot traversal", wantErr: "path traversal",
			ents: func(string) []tent { return []tent{reg("../outside/pwned", "x")} }},
		{name: "dotdot in the middle", wantErr: "path traversal",
			ents: func(string) []tent { return []tent{reg("a/../../outside/pwned", "x")} }},
		{name: "absolute path", wantErr: "absolute path",
			ents: func(o string) []tent { return []tent{reg(o+"/pwned", "x")} }},
		{name: "write through planted absolute symlink dir",
			ents:   func(o string) []tent { return []tent{sym("evil", "/"), reg("evil/pwned", "x")} },
			inside: map[string]string{"pwned": "x"}},
		{name: "write through planted relative symlink dir",
			ents:   func(o string) []tent { return []tent{sym("evil", "../../../../../../.."), reg("evil/pwned", "x")} },
			inside: map[string]string{"pwned": "x"}},
		{name: "write through symlink to the outside dir", wantErr: "dangling",
			ents: func(o string) []tent { return []tent{sym("evil", o), reg("evil/pwned", "x")} }},
		{name: "overwrite a symlink to an outside file",
			ents:   func(o string) []tent { return []tent{sym("f", o+"/sentinel"), reg("f", "replaced")} },
			inside: map[string]string{"f": "replaced"}},
		{name: "hardlink to outside via dotdot", wantErr: "path traversal",
			ents: func(o string) []tent { return []tent{hard("h", "../outside/sentinel")} }},
		{name: "hardlink to absolute path", wantErr: "absolute path",
			ents: func(o string) []tent { return []tent{hard("h", o+"/sentinel")} }},
		{name: "hardlink through planted symlink", wantErr: "",
			ents: func(o string) []tent {
				return []tent{reg("etc/passwd", "root"), sym("evil", "/"), hard("h", "evil/etc/passwd")}
			},
			inside: map[string]string{"h": "root"}},
		{name: "hardlink through symlink to the outside dir", wantErr: "hardlink target",
			ents: func(o string) []tent { return []tent{sym("evil", o), hard("h", "evil/sentinel")} }},
		{name: "char device", wantErr: "device node refused",
			ents: func(string) []tent {
				return []tent{{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}}
			}},
		{name: "block device", wantErr: "device node refused",
			ents: func(string) []tent {
				return []tent{{hdr: tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8}}}
			}},
		{name: "whiteout char device written directly", wantErr: "device node refused",
			ents: func(string) []tent {
				return []tent{{hdr: tar.Header{Name: "wh", Typeflag: tar.TypeChar}}}
			}},
		{name: "whiteout traversal", wantErr: "invalid whiteout",
			ents: func(string) []tent { return []tent{reg("a/.wh..", "")} }},
		{name: "whiteout through planted symlink is confined",
			ents:   func(o string) []tent { return []tent{sym("evil", "/"), reg("evil/.wh.sentinel", "")} },
			inside: map[string]string{}},
		{name: "opaque marker through symlink to outside", wantErr: "dangling",
			ents: func(o string) []tent { return []tent{sym("evil", o), reg("evil/.wh..wh..opq", "")} }},
		{name: "forged overlay xattr is dropped",
			ents: func(string) []tent {
				return []tent{{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir,
					PAXRecords: map[string]string{"SCHILY.xattr.trusted.overlay.opaque": "y"}}}}
			},
			inside: map[string]string{}},
		{name: "fifo is allowed",
			ents: func(string) []tent {
				return []tent{{hdr: tar.Header{Name: "p", Typeflag: tar.TypeFifo, Mode: 0o640}}}
			},
			inside: map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			snap := filepath.Join(base, "snap", "fs")
			os.MkdirAll(outside, 0o755)
			os.MkdirAll(snap, 0o755)
			os.WriteFile(filepath.Join(outside, "sentinel"), []byte("keep"), 0o644)
			_, err := unpackLayer(context.Background(), bytes.NewReader(tarBytes(t, tc.ents(outside))), snap)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("confined layer failed: %v", err)
			}
			// Nothing outside changed.
			if n := dirNames(t, outside); len(n) != 1 || n[0] != "sentinel" {
				t.Errorf("outside dir now holds %v", n)
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "sentinel")); string(b) != "keep" {
				t.Errorf("sentinel = %q", b)
			}
			if n := dirNames(t, base); len(n) != 2 {
				t.Errorf("base dir now holds %v", n)
			}
			for name, body := range tc.inside {
				b, err := os.ReadFile(filepath.Join(snap, name))
				if err != nil || string(b) != body {
					t.Errorf("%s in snapshot = %q, %v; want %q", name, b, err, body)
				}
			}
			if tc.name == "forged overlay xattr is dropped" {
				if _, err := unix.Lgetxattr(filepath.Join(snap, "d"), "trusted.overlay.opaque", make([]byte, 8)); err == nil {
					t.Error("forged trusted.overlay.opaque was applied")
				}
			}
		})
	}
}

// TestWhiteouts pulls a two-layer image with a whiteout and an opaque dir,
// checks the overlay markers, and mounts an overlay to see the effect.
func TestWhiteouts(t *testing.T) {
	e := newEnv(t)
	dir := func(n string) tent { return tent{hdr: tar.Header{Name: n, Typeflag: tar.TypeDir}} }
	f := func(n, b string) tent { return tent{hdr: tar.Header{Name: n}, body: b} }
	lower := tarLayer(t, []tent{dir("d/"), f("d/gone", "1"), f("d/kept", "2"), dir("o/"), f("o/old", "3"),
		{hdr: tar.Header{Name: "bin/sh", Mode: 0o4755, Uid: 1000, Gid: 1000}, body: "#!"},
		{hdr: tar.Header{Name: "bin/link", Typeflag: tar.TypeLink, Linkname: "bin/sh"}},
		{hdr: tar.Header{Name: "lib", Typeflag: tar.TypeSymlink, Linkname: "/usr/lib"}}})
	upper := tarLayer(t, []tent{f("d/.wh.gone", ""), dir("o/"), f("o/.wh..wh..opq", ""), f("o/new", "4")})
	e.reg.push(t, "wh:1", imageOf(t, lower, upper))
	img := e.pull(e.reg.host + "/wh:1")
	lowers, _, err := e.svc.Acquire(ctxT(t), "c1", img.ID)
	if err != nil {
		t.Fatal(err)
	}
	top, bottom := lowers[0], lowers[1]
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(top, "d/gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout: mode %o rdev %d err %v", st.Mode, st.Rdev, err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(top, "o"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr = %q, %v", buf[:n], err)
	}
	if err := unix.Lstat(filepath.Join(bottom, "bin/sh"), &st); err != nil || st.Mode&0o7777 != 0o4755 || st.Uid != 1000 || st.Nlink != 2 {
		t.Errorf("bin/sh: mode %o uid %d nlink %d err %v", st.Mode&0o7777, st.Uid, st.Nlink, err)
	}
	if l, _ := os.Readlink(filepath.Join(bottom, "lib")); l != "/usr/lib" {
		t.Errorf("lib -> %q", l)
	}

	mnt := t.TempDir()
	work, upperDir := t.TempDir(), t.TempDir()
	opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upperDir + ",workdir=" + work
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		t.Skipf("overlay mount not available: %v", err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	for p, want := range map[string]bool{"d/gone": false, "d/kept": true, "o/old": false, "o/new": true, "bin/sh": true} {
		if _, err := os.Lstat(filepath.Join(mnt, p)); (err == nil) != want {
			t.Errorf("%s visible = %v, want %v", p, err == nil, want)
		}
	}
}

func TestChainIDs(t *testing.T) {
	e := newEnv(t)
	l1, l2 := tarLayer(t, []tent{{hdr: tar.Header{Name: "a"}, body: "a"}}), tarLayer(t, []tent{{hdr: tar.Header{Name: "b"}, body: "b"}})
	e.reg.push(t, "c:1", imageOf(t, l1, l2))
	img := e.pull(e.reg.host + "/c:1")
	d1, d2 := must[v1.Hash](t)(l1.DiffID()), must[v1.Hash](t)(l2.DiffID())
	want2, _, _ := v1.SHA256(strings.NewReader(d1.String() + " " + d2.String()))
	if img.ChainIDs[0] != d1.String() || img.ChainIDs[1] != want2.String() {
		t.Errorf("ChainIDs = %v, want [%s %s]", img.ChainIDs, d1, want2)
	}
}

func tarHeader(name string) tar.Header { return tar.Header{Name: name} }
